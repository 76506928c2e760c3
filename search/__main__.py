"""``python -m dada_transforms.search``: the same as ``dada-search``."""

import sys

from .cli import main

sys.exit(main())
