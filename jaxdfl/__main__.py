"""``python -m jaxdfl``: the command line."""

from jaxdfl.cli import main

raise SystemExit(main())
