"""`http`: call a URL (a wake controller, a smart plug, a cloud API); 2xx means done."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import httpx
from pydantic import Field

from natrelay_publisher.errors import RecipeError
from natrelay_publisher.recipes.base import RecipeConfig, expect, refused
from natrelay_publisher.redact import describe, origin
from natrelay_publisher.types import Action, ProviderSettings

logger = logging.getLogger("natrelay.publisher")


class HttpRecipeConfig(RecipeConfig):
    url: str = Field(pattern=r"^https?://")
    method: str = Field(default="POST", pattern=r"^[A-Za-z]+$")
    headers: dict[str, str] = Field(default_factory=dict)
    body: Any = None


class HttpRecipe:
    type_name: ClassVar[str] = "http"
    Config: ClassVar[type[RecipeConfig]] = HttpRecipeConfig
    can_sleep: ClassVar[bool] = True

    def __init__(self, config: RecipeConfig, provider: ProviderSettings) -> None:
        self.config = expect(config, HttpRecipeConfig)

    @property
    def max_wait_seconds(self) -> float:
        return self.config.max_wait_seconds

    async def run(self, action: Action) -> None:
        config = self.config
        method = config.method.upper()
        content = config.body if isinstance(config.body, str) else None
        json_body = None if content is not None or config.body is None else config.body
        try:
            async with httpx.AsyncClient(timeout=config.max_wait_seconds) as client:
                response = await client.request(
                    method, config.url, headers=config.headers, content=content, json=json_body
                )
        except httpx.HTTPError as exc:
            # The URL (and its path, which may be a webhook's key) stays on this machine.
            logger.warning(
                "%s %s for %s failed: %s", method, origin(config.url), action, describe(exc)
            )
            raise RecipeError(f"the {action} request ({method}) failed: {describe(exc)}") from exc
        if not response.is_success:
            raise refused(f"the {action} request", response.status_code, response.text)

    async def ready(self) -> bool | None:
        return None
