"""`python -m natrelay_cli …` is the `natrelay` command."""

from __future__ import annotations

from natrelay_cli.main import main

raise SystemExit(main())
