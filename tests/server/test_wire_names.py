"""A name given twice in one request is refused, naming it (register, apply)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from natrelay.wire import RegisterRequest
from natrelay.wire.rows import LlmApply, LlmDocument
from tests.server.conftest import spec


def test_a_register_naming_a_model_twice_is_refused_with_the_name() -> None:
    with pytest.raises(ValidationError, match=r"given more than once: \['a'\]"):
        RegisterRequest(providers=[spec("a"), spec("b"), spec("a")])
    assert len(RegisterRequest(providers=[spec("a"), spec("b")]).providers) == 2


def test_an_apply_naming_a_row_twice_is_refused_with_the_name() -> None:
    docs = [LlmDocument(name=n) for n in ("x", "y", "x", "y", "z")]
    with pytest.raises(ValidationError, match=r"given more than once: \['x', 'y'\]"):
        LlmApply(documents=docs)
    assert len(LlmApply(documents=docs[2:]).documents) == 3
