"""`python -m sso` is the `sso` command."""

from sso.cli import main

raise SystemExit(main())
