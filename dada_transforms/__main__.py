"""``python -m dada_transforms``: the ``dada-transforms`` command."""

import sys

from .cli import main

sys.exit(main())
