"""`python -m server` is the `atopen` command."""

from server.cli import main

raise SystemExit(main())
