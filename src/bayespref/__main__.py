"""``python -m bayespref`` is the ``bayespref`` command."""

import sys

from .cli import main

sys.exit(main())
