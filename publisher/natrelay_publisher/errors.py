"""Publisher errors: one base class, one-line subclasses."""

from __future__ import annotations

import yaml

from natrelay.wire import ErrorCode


class PublisherError(Exception):
    """Base class of every error the publisher raises on purpose."""


class ConfigError(PublisherError):
    """The configuration file is missing, unreadable or invalid (message names file and field)."""


class PluginError(PublisherError):
    """A plugin could not be found or loaded."""


class BackendFailedError(PublisherError):
    """The backend failed: unreachable, non-2xx, or an answer that is not what it should be.
    `status` is the backend's own (a 4xx, or 504 when it went silent), else the code's."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: ErrorCode = ErrorCode.BACKEND_ERROR,
    ) -> None:
        super().__init__(message)
        self.message = message
        # What the client's error says: the backend failed, or does not serve the endpoint.
        self.code = code
        self.status = status or code.status


class RecipeError(PublisherError):
    """A wake or sleep recipe failed; the message is the cause, for the wake's error."""


class RelayCallError(PublisherError):
    """A call to the relay failed; raised as such, an error that is not worth retrying."""

    def __init__(self, message: str, *, status: int = 0, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code


class RelayUnavailableError(RelayCallError):
    """The relay cannot be reached or answered 5xx/429: retry later."""


class RelayAuthError(RelayCallError):
    """The relay refused the publish token (401/403): fatal."""


class KeyRefusedError(RelayUnavailableError):
    """The relay refused a publish token it had accepted before (it lost its keys, or
    the key was revoked): retried like an outage, since the first may mend itself."""


class SessionLostError(RelayCallError):
    """The relay no longer knows our session: register again."""


class NameHeldError(RelayCallError):
    """A provider name is held by another live publisher session."""


class TaskCancelledByClientError(RelayCallError):
    """The client went away: abort the task and post nothing more."""


class TaskGoneError(RelayCallError):
    """The task is no longer ours (lease lost, not found, or result conflict)."""


class SessionFileBusyError(PublisherError):
    """Another publisher process uses the same session file."""


def field_path(loc: tuple[str | int, ...]) -> str:
    """`('providers', 0, 'maxConcurrency')` → `providers[0].maxConcurrency`."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def yaml_reason(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"{exc.problem} (line {mark.line + 1}, column {mark.column + 1})"
    return " ".join(str(exc).split())
