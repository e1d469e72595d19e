"""`wol`: send a Wake-on-LAN magic packet (6 x 0xFF, then the MAC 16 times) over UDP."""

from __future__ import annotations

import ipaddress
import re
import socket
from typing import ClassVar

from pydantic import Field, field_validator

from natrelay_publisher.errors import RecipeError
from natrelay_publisher.recipes.base import RecipeConfig, expect
from natrelay_publisher.types import Action, ProviderSettings

_MAC = re.compile(r"^[0-9a-f]{2}([:-]?)[0-9a-f]{2}(\1[0-9a-f]{2}){4}$", re.IGNORECASE)


class WolRecipeConfig(RecipeConfig):
    mac: str
    broadcast: str = "255.255.255.255"
    port: int = Field(default=9, ge=1, le=65535)

    @field_validator("mac")
    @classmethod
    def _mac(cls, value: str) -> str:
        if not _MAC.match(value):
            raise ValueError("should be a MAC address like aa:bb:cc:dd:ee:ff")
        return value

    @field_validator("broadcast")
    @classmethod
    def _address(cls, value: str) -> str:
        ipaddress.IPv4Address(value)
        return value


def magic_packet(mac: str) -> bytes:
    """The Wake-on-LAN payload for `mac` (any of aa:bb:.., aa-bb-.., aabb..)."""
    raw = bytes.fromhex(re.sub(r"[:-]", "", mac))
    return b"\xff" * 6 + raw * 16


class WolRecipe:
    type_name: ClassVar[str] = "wol"
    Config: ClassVar[type[RecipeConfig]] = WolRecipeConfig
    can_sleep: ClassVar[bool] = False

    def __init__(self, config: RecipeConfig, provider: ProviderSettings) -> None:
        self.config = expect(config, WolRecipeConfig)

    @property
    def max_wait_seconds(self) -> float:
        return self.config.max_wait_seconds

    async def run(self, action: Action) -> None:
        if action != "wake":
            raise RecipeError("Wake-on-LAN cannot put a machine to sleep")
        config = self.config
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
                sock.sendto(magic_packet(config.mac), (config.broadcast, config.port))
        except OSError as exc:
            raise RecipeError(
                f"cannot send the magic packet to {config.broadcast}:{config.port}: {exc}"
            ) from exc

    async def ready(self) -> bool | None:
        return None
