"""``python -m bayespref.cli`` is the ``bayespref`` command (torchrun needs a module path)."""

import sys

from . import main

sys.exit(main())
