"""Shared type aliases."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Clock = Callable[[], float]
JsonObject = dict[str, Any]
