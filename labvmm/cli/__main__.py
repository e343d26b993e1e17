"""`python -m labvmm.cli`: the `labvmm` command without installing its script."""

import sys

from . import _main_for_shell

if __name__ == "__main__":
    sys.exit(_main_for_shell())
