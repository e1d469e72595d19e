"""`vllm-sleep`: vLLM's sleep mode (POST /sleep, POST /wake_up, GET /is_sleeping)."""

from __future__ import annotations

import re
from typing import ClassVar, Self

import httpx
from pydantic import Field, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from natrelay_publisher.errors import RecipeError
from natrelay_publisher.recipes.base import RecipeConfig, expect, refused
from natrelay_publisher.redact import describe
from natrelay_publisher.types import Action, ProviderSettings

READY_TIMEOUT_SECONDS = 5.0


class VllmSleepRecipeConfig(RecipeConfig):
    # The server root (no /v1); defaults to the provider's baseUrl without a trailing /v1.
    base_url: str | None = Field(default=None, pattern=r"^https?://")
    # vLLM sleep level: 1 offloads weights to CPU RAM, 2 discards them.
    level: int = Field(default=1, ge=1, le=2)

    def for_provider(self, provider: ProviderSettings) -> Self:
        if self.base_url:
            return self.model_copy(update={"base_url": self.base_url.rstrip("/")})
        if not provider.base_url:
            error = PydanticCustomError("missing", "required when the provider has no baseUrl")
            raise ValidationError.from_exception_data(
                type(self).__name__, [InitErrorDetails(type=error, loc=("baseUrl",), input=None)]
            )
        root = re.sub(r"/v1/?$", "", provider.base_url.rstrip("/"))
        return self.model_copy(update={"base_url": root})


class VllmSleepRecipe:
    type_name: ClassVar[str] = "vllm-sleep"
    Config: ClassVar[type[RecipeConfig]] = VllmSleepRecipeConfig
    can_sleep: ClassVar[bool] = True

    def __init__(self, config: RecipeConfig, provider: ProviderSettings) -> None:
        self.config = expect(config, VllmSleepRecipeConfig).for_provider(provider)
        self.base_url = self.config.base_url or ""
        key = provider.api_key.get_secret_value() if provider.api_key else None
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}

    @property
    def max_wait_seconds(self) -> float:
        return self.config.max_wait_seconds

    async def run(self, action: Action) -> None:
        if action == "wake":
            path, params = "/wake_up", {}
        else:
            path, params = "/sleep", {"level": str(self.config.level)}
        url = f"{self.base_url}{path}"
        try:
            async with httpx.AsyncClient(timeout=self.config.max_wait_seconds) as client:
                response = await client.post(url, params=params, headers=self.headers)
        except httpx.HTTPError as exc:
            raise RecipeError(f"vLLM's POST {path} failed: {describe(exc)}") from exc
        if not response.is_success:
            raise refused(f"vLLM's POST {path}", response.status_code, response.text)

    async def ready(self) -> bool | None:
        try:
            async with httpx.AsyncClient(timeout=READY_TIMEOUT_SECONDS) as client:
                response = await client.get(f"{self.base_url}/is_sleeping", headers=self.headers)
            return response.is_success and response.json().get("is_sleeping") is False
        except (httpx.HTTPError, ValueError, AttributeError):
            return False
