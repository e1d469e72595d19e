"""`python -m natrelay_publisher` is the `natrelay` command."""

from __future__ import annotations

from natrelay_publisher.cli import main

raise SystemExit(main())
