"""``python -m analysis <command> --out DIR``: see `analysis.cli`."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
