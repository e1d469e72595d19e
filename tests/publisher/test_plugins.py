"""Third-party plugins arrive through entry points and take part like the built-ins."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PLUGIN = """
from __future__ import annotations

from typing import Any, ClassVar

from natrelay_publisher import ProviderSettings
from natrelay_publisher.providers import BackendReply, ProviderOptions
from natrelay_publisher.recipes import RecipeConfig


class ShoutOptions(ProviderOptions):
    exclamations: int = 1


class ShoutProvider:
    type_name: ClassVar[str] = "shout"
    Options: ClassVar[type[ProviderOptions]] = ShoutOptions
    requires: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: ProviderSettings) -> None:
        self.name, self.model = config.name, "shout"
        self.options = ShoutOptions.model_validate(config.options)

    async def available(self) -> bool:
        return True

    async def models(self) -> list[str]:
        return [self.model]

    async def complete(self, request: dict[str, Any]) -> BackendReply:
        text = request["messages"][-1]["content"].upper() + "!" * self.options.exclamations
        return BackendReply(200, {"choices": [{"message": {"content": text}}]})

    async def stream(self, request: dict[str, Any]):
        yield {"choices": [{"delta": {"content": "no"}}]}

    async def aclose(self) -> None:
        pass


class KnockConfig(RecipeConfig):
    door: str


class KnockRecipe:
    type_name: ClassVar[str] = "knock"
    Config: ClassVar[type[RecipeConfig]] = KnockConfig
    can_sleep: ClassVar[bool] = False

    def __init__(self, config: RecipeConfig, provider: ProviderSettings) -> None:
        self.config = config

    @property
    def max_wait_seconds(self) -> float:
        return self.config.max_wait_seconds

    async def run(self, action: str) -> None:
        print("knocked on", self.config.door)

    async def ready(self) -> bool | None:
        return True
"""

SCRIPT = """
import asyncio
from natrelay_publisher.config import parse_config
from natrelay_publisher.errors import ConfigError
from natrelay_publisher.slots import ProviderSlot

config = parse_config({"relay": {"url": "http://127.0.0.1:9", "token": "t"}, "providers": [
    {"name": "loud", "type": "shout", "options": {"exclamations": 3},
     "wake": {"type": "knock", "door": "front"}}]})
slot = ProviderSlot.build(config.providers[0])
reply = asyncio.run(slot.provider.complete({"messages": [{"role": "user", "content": "hi"}]}))
print(reply.body["choices"][0]["message"]["content"])
asyncio.run(slot.wake_recipe.run("wake"))
try:
    parse_config({"relay": {"url": "http://127.0.0.1:9", "token": "t"}, "providers": [
        {"name": "loud", "type": "shout", "options": {"volume": 11}}]}, "c.yaml")
except ConfigError as exc:
    print(exc)
"""


def test_entry_point_plugins(tmp_path: Path) -> None:
    (tmp_path / "natrelay_shout.py").write_text(PLUGIN)
    dist = tmp_path / "natrelay_shout-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: natrelay-shout\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[natrelay.providers]\nshout = natrelay_shout:ShoutProvider\n\n"
        "[natrelay.wake_recipes]\nknock = natrelay_shout:KnockRecipe\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "HI!!!",
        "knocked on front",
        "c.yaml: providers[0].options.volume: unknown key (known: exclamations)",
    ]
