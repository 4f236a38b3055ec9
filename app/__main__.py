"""``python -m app``: the same as the ``chargpt-studio`` command."""

import sys

from app.main import main

sys.exit(main())
