"""``python -m tunesmith``: the ``tunesmith`` command."""

from .cli import main

raise SystemExit(main())
