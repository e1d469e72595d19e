"""Ordered plugin registries after Mangum's handler list: entry points first, then built-ins."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from importlib.metadata import entry_points
from typing import ClassVar, Generic, Protocol, TypeVar

from natrelay_publisher.errors import PluginError

logger = logging.getLogger("natrelay.publisher")


class Named(Protocol):
    type_name: ClassVar[str]


T = TypeVar("T", bound=type[Named])


class Registry(Generic[T]):
    """Finds a plugin class by its `type`; third-party entry points come before the built-ins."""

    def __init__(self, group: str, noun: str, builtins: Sequence[T]) -> None:
        self.group = group
        self.noun = noun
        self.builtins = list(builtins)
        self._loaded: list[T] | None = None

    def plugins(self) -> list[T]:
        if self._loaded is None:
            self._loaded = [*self._entry_points(), *self.builtins]
        return self._loaded

    def names(self) -> list[str]:
        return list(dict.fromkeys(plugin.type_name for plugin in self.plugins()))

    def find(self, type_name: str) -> T:
        for plugin in self.plugins():
            if plugin.type_name == type_name:
                return plugin
        raise PluginError(f"unknown {self.noun} {type_name!r} (known: {', '.join(self.names())})")

    def _entry_points(self) -> list[T]:
        found: list[T] = []
        for point in entry_points(group=self.group):
            try:
                plugin = point.load()
            except Exception as exc:  # a broken third-party plugin must not stop the others
                logger.warning("cannot load plugin %s from %s: %s", point.name, self.group, exc)
                continue
            if getattr(plugin, "type_name", None) != point.name:
                logger.warning(
                    "plugin %s in %s has type %r; expected %r: skipped",
                    point.value,
                    self.group,
                    getattr(plugin, "type_name", None),
                    point.name,
                )
                continue
            found.append(plugin)
        return found
