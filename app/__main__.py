"""``python -m app``: the same as the ``chargpt-studio`` command."""

from app.main import entry

entry()
