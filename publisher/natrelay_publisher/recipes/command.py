"""`command`: run a program (no shell); exit code 0 means done."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from typing import ClassVar

from pydantic import Field, field_validator

from natrelay_publisher.errors import RecipeError
from natrelay_publisher.recipes.base import RecipeConfig, expect, tail
from natrelay_publisher.types import Action, ProviderSettings

logger = logging.getLogger("natrelay.publisher")


class CommandRecipeConfig(RecipeConfig):
    command: str = Field(min_length=1)
    args: list[str] = Field(default_factory=list)

    @field_validator("command")
    @classmethod
    def _runnable(cls, value: str) -> str:
        """Found at start, not at the first wake: a program on PATH or an executable file."""
        if shutil.which(value) is None:
            where = "is not an executable file" if os.sep in value else "is not on PATH"
            raise ValueError(f"{value!r} {where}")
        return value


class CommandRecipe:
    type_name: ClassVar[str] = "command"
    Config: ClassVar[type[RecipeConfig]] = CommandRecipeConfig
    can_sleep: ClassVar[bool] = True

    def __init__(self, config: RecipeConfig, provider: ProviderSettings) -> None:
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
            logger.warning("cannot run %s: %s", config.command, exc)
            raise RecipeError(
                f"cannot run the {action} command: {exc.strerror or type(exc).__name__}"
            ) from exc
        try:
            async with asyncio.timeout(config.max_wait_seconds):
                _, stderr = await process.communicate()
        except TimeoutError:
            raise RecipeError(
                f"the {action} command did not finish within {config.max_wait_seconds:g} s"
            ) from None
        finally:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if process.returncode != 0:
            # Its stderr may hold anything (a token, a path): at DEBUG, on this machine only.
            logger.warning(
                "%s command %s exited with status %d", action, config.command, process.returncode
            )
            logger.debug(
                "%s command %s exited with status %d: %s",
                action,
                config.command,
                process.returncode,
                tail(stderr) or "no output on stderr",
            )
            raise RecipeError(
                f"the {action} command exited with status {process.returncode} "
                "(its stderr is in the publisher's debug log)"
            )

    async def ready(self) -> bool | None:
        return None
