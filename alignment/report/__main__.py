"""``python -m alignment.report DIR``."""

import sys

from alignment.report import main

sys.exit(main())
