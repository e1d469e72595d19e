"""`python -m natrelay_publisher …` is the `natrelay` command (natrelay_cli)."""

from __future__ import annotations

from natrelay_cli.main import main

raise SystemExit(main())
