"""``python -m benchmarks.gpu_check``: run the check, exit with its code (see the package docstring)."""

import sys

from .cli import main

sys.exit(main())
