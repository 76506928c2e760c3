"""Ships ``dada_transforms_timm.pth`` at the top of site-packages (see docs/timm.md).

Regular installs get it from ``build_lib``; editable installs (``pip install -e .``)
build the wheel from ``install_lib``, so the file is copied there as well.
"""

import os

from setuptools import setup
from setuptools.command.build_py import build_py

PTH_FILE = "dada_transforms_timm.pth"


class BuildPyWithTimmHook(build_py):
    """build_py that also places the timm hook's .pth file beside the packages."""

    def run(self):
        super().run()
        self.copy_file(PTH_FILE, os.path.join(self.build_lib, PTH_FILE))
        if self.editable_mode:
            # editable_wheel points install_lib at the unpacked wheel: the file lands in site-packages
            install_lib = self.get_finalized_command("install").install_lib
            self.copy_file(PTH_FILE, os.path.join(install_lib, PTH_FILE))

    def get_outputs(self, include_bytecode=True):
        return [*super().get_outputs(include_bytecode), os.path.join(self.build_lib, PTH_FILE)]


setup(cmdclass={"build_py": BuildPyWithTimmHook})
