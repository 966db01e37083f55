"""``python -m arsmooth``: the command-line tool (also what torchrun launches)."""

import sys

from .cli import main

sys.exit(main())
