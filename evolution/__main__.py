"""``python -m evolution run CONFIG`` — the entry point for ``ray job submit``."""

import sys

from evolution.cli import main

sys.exit(main())
