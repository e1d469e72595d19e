"""Storage signals: what a store raises besides botocore's own failures.

These are not relay errors: the service decides what each means for a caller.
"""

from __future__ import annotations


class ConditionFailedError(Exception):
    """A conditional write lost. `record` is the item as it was, decoded into a store
    record (None when the item did not exist or the write did not ask for it)."""

    def __init__(self, message: str, *, record: object | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.record = record


class SameResultError(ConditionFailedError):
    """The task already holds exactly this result (a repeated post): `record` is it."""


class ChunkDiffersError(ConditionFailedError):
    """A stream chunk batch of this seq was already stored with other content."""
