"""The exit codes of every `natrelay` command."""

from __future__ import annotations

# The command failed: the relay refused or could not be reached, the publisher had to stop.
EXIT_FAILED = 1
# A bad command line or config file.
EXIT_USAGE = 2
