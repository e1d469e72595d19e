"""Every error code carries the HTTP status and the OpenAI type it is answered with, and
the statuses are the ones docs/relay.md promises."""

from __future__ import annotations

import re
from pathlib import Path

from natrelay.wire import ErrorCode, ErrorType

RELAY_DOC = Path(__file__).resolve().parents[2] / "docs" / "relay.md"


def _documented_statuses() -> dict[str, int]:
    """Each code in docs/relay.md's table of errors, with its status (rows that give one)."""
    found: dict[str, int] = {}
    for line in RELAY_DOC.read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.split("|")[1:-1]]
        if len(cells) == 3 and cells[0].isdigit():
            for code in re.findall(r"`([a-z_]+)`", cells[1]):
                found[code] = int(cells[0])
    return found


def test_every_code_has_an_error_status_and_a_type() -> None:
    for code in ErrorCode:
        assert 400 <= code.status <= 599, code
        assert isinstance(code.type, ErrorType), code


def test_the_statuses_are_the_documented_ones() -> None:
    documented = _documented_statuses()
    assert len(documented) >= 15, documented  # the table was read
    assert {code: ErrorCode(code).status for code in documented} == documented


def test_the_types_follow_the_openai_api() -> None:
    # What the openai SDK and OpenAI's own answers use for these statuses.
    assert ErrorCode.INVALID_API_KEY.type == "authentication_error"
    assert ErrorCode.FORBIDDEN.type == ErrorCode.SESSION_FORBIDDEN.type == "permission_error"
    assert ErrorCode.RATE_LIMIT_EXCEEDED.type == "rate_limit_error"
    assert ErrorCode.INVALID_REQUEST.type == ErrorCode.MODEL_NOT_FOUND.type
    assert ErrorCode.MODEL_NOT_FOUND.type == "invalid_request_error"
    assert ErrorCode.INTERNAL_ERROR.type == "server_error"
