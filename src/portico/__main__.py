"""``python -m portico``: the same command line as ``portico``."""

from portico.cli.main import main

raise SystemExit(main())
