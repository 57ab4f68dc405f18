"""``python -m purify.cli``."""

import sys

from purify.cli import main

sys.exit(main())
