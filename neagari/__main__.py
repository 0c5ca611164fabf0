"""``python -m neagari``: the same command line as ``neagari``."""

import sys

from neagari.cli import main

sys.exit(main())
