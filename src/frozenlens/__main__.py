"""``python -m frozenlens`` = the ``frozenlens`` command."""

import sys

from .cli import main

sys.exit(main())
