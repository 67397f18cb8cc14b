"""`python -m server` is the `atopen` command."""

from server.process.cli import main

raise SystemExit(main())
