"""``python -m moopt ...`` is the ``moopt`` command line (see :mod:`moopt.cli`)."""

import sys

from moopt.cli import main

if __name__ == "__main__":
    sys.exit(main())
