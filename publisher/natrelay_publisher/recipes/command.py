"""`command`: run a program (no shell); exit code 0 means done."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, ClassVar

from pydantic import Field

from natrelay_publisher.errors import RecipeError
from natrelay_publisher.recipes.base import RecipeConfig, expect, tail

if TYPE_CHECKING:
    from natrelay_publisher.config import ProviderConfig
    from natrelay_publisher.types import Action


class CommandRecipeConfig(RecipeConfig):
    command: str = Field(min_length=1)
    args: list[str] = Field(default_factory=list)


class CommandRecipe:
    type_name: ClassVar[str] = "command"
    Config: ClassVar[type[RecipeConfig]] = CommandRecipeConfig
    can_sleep: ClassVar[bool] = True

    def __init__(self, config: RecipeConfig, provider: ProviderConfig) -> None:
        self.config = expect(config, CommandRecipeConfig)

    @property
    def max_wait_seconds(self) -> float:
        return self.config.max_wait_seconds

    async def run(self, action: Action) -> None:
        config = self.config
        try:
            process = await asyncio.create_subprocess_exec(
                config.command,
                *config.args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise RecipeError(f"cannot run {config.command}: {exc}") from exc
        try:
            async with asyncio.timeout(config.max_wait_seconds):
                _, stderr = await process.communicate()
        except TimeoutError:
            raise RecipeError(
                f"{config.command} did not finish within {config.max_wait_seconds:g} s"
            ) from None
        finally:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if process.returncode != 0:
            detail = tail(stderr) or "no output on stderr"
            raise RecipeError(f"{config.command} exited with {process.returncode}: {detail}")

    async def ready(self) -> bool | None:
        return None
