"""One published provider at run time: its plugin objects, concurrency, and the status
its backend's checks give it."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from natrelay.wire import Endpoint, LlmStatus, ProviderSpec
from natrelay_publisher.config import ProviderConfig
from natrelay_publisher.health import BackendLoad, Health
from natrelay_publisher.providers import PROVIDERS, Provider
from natrelay_publisher.providers.base import default_endpoints
from natrelay_publisher.recipes import RECIPES, WakeRecipe

logger = logging.getLogger("natrelay.publisher")

# A backend without a wake recipe is reported unavailable after this many failed checks
# in a row.
UNAVAILABLE_AFTER_CHECKS = 2


@dataclass(eq=False)
class ProviderSlot:
    config: ProviderConfig
    provider: Provider
    wake_recipe: WakeRecipe | None = None
    sleep_recipe: WakeRecipe | None = None
    status: LlmStatus = LlmStatus.ACTIVE
    # Infer tasks accepted and not finished (waiting for a wake, a slot, or running).
    held: int = 0
    # What the last availability check said (None: not checked yet), for logging changes.
    seen_up: bool | None = None
    # Availability checks failed in a row, and when the backend last answered a request.
    failed_checks: int = 0
    answered_at: float = float("-inf")
    last_activity: float = field(default_factory=time.monotonic)
    # Held by a wake or a sleep: they never overlap.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    sleeping: asyncio.Task[None] | None = None
    # Bumped by every wake and sleep, so a status check that raced one is thrown away.
    transitions: int = 0
    # A check never waits longer than this (the daemon: half a heartbeat).
    check_ceiling: float = 15.0
    # Whether the last check was the wake recipe's (not the provider's).
    recipe_decided: bool = False
    # What runs on its backend, shared with the other providers of the same server.
    load: BackendLoad = field(default_factory=BackendLoad)
    semaphore: asyncio.Semaphore = field(init=False)
    health: Health = field(init=False)

    def __post_init__(self) -> None:
        self.semaphore = asyncio.Semaphore(self.config.max_concurrency)
        self.health = Health(self.config.health_timeout_seconds, self.check_ceiling, load=self.load)

    @classmethod
    def build(
        cls,
        config: ProviderConfig,
        *,
        heartbeat_seconds: float = 30.0,
        load: BackendLoad | None = None,
    ) -> ProviderSlot:
        """Instantiate the provider and recipe plugins named in `config`; `load`: its
        backend's, when another provider has the same server."""
        provider = PROVIDERS.find(config.type)(config)
        wake = RECIPES.find(config.wake.type)(config.wake, config) if config.wake else None
        sleep = RECIPES.find(config.sleep.type)(config.sleep, config) if config.sleep else None
        return cls(
            config=config,
            provider=provider,
            wake_recipe=wake,
            sleep_recipe=sleep,
            check_ceiling=heartbeat_seconds / 2,
            load=load or BackendLoad(),
        )

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def free(self) -> int:
        return max(0, self.config.max_concurrency - self.held)

    @property
    def busy(self) -> bool:
        """A wake or a sleep is running."""
        return self.lock.locked()

    def touch(self) -> None:
        self.last_activity = time.monotonic()

    def idle_for(self) -> float:
        return time.monotonic() - self.last_activity

    async def up(self) -> bool | None:
        """Whether the backend answers (natrelay_publisher.health); None: it is busy,
        its requests in flight judge it."""
        return await self.health.check(self.ready)

    def why_down(self) -> str:
        """Why the last check failed, as this machine's log may say it."""
        if self.health.problem:
            return self.health.problem
        if self.wake_recipe is None or not self.recipe_decided:
            provider_says = getattr(self.provider, "unavailable_because", None)
            if provider_says:
                return str(provider_says)
        return "its availability check failed"

    async def ready(self) -> bool:
        """The wake recipe's readiness check if it has one, else the provider's availability."""
        self.recipe_decided = False
        if self.wake_recipe is not None:
            answer = await self.wake_recipe.ready()
            if answer is not None:
                self.recipe_decided = True
                return answer
        return await self.provider.available()

    async def check_first(self) -> None:
        """The status it is published with: hibernating when asleep (with a wake recipe),
        unavailable when down (without one)."""
        up = bool(await self.up())
        self.seen_up = up
        if self.wake_recipe is not None and not up:
            self.status = LlmStatus.HIBERNATING
            logger.info("%s is asleep: publishing it hibernating", self.name)
        elif not up:
            self.status = LlmStatus.UNAVAILABLE
            self.failed_checks = 1
            logger.warning(
                "backend of %s is not answering (%s): publishing it unavailable",
                self.name,
                self.why_down(),
            )

    async def check(self, recent_seconds: float) -> None:
        """Check the backend again and update the status; a backend that answered a request
        in the last `recent_seconds` is up, however slow its model list, and one with
        requests in flight is not asked (natrelay_publisher.health). A check that raced a
        wake or a sleep changes nothing."""
        transitions, recent = self.transitions, time.monotonic() - recent_seconds
        if self.busy:
            return
        verdict = await self.up()
        up = verdict is not False or self.answered_at >= recent
        if self.busy or self.transitions != transitions:
            return
        if up != self.seen_up:
            why = "" if up else f" ({self.why_down()})"
            logger.info("backend of %s is %s%s", self.name, "up" if up else "down", why)
            self.seen_up = up
        self.failed_checks = 0 if up else self.failed_checks + 1
        if self.wake_recipe is not None:
            self.status = LlmStatus.ACTIVE if up else LlmStatus.HIBERNATING
        elif up:
            self.status = LlmStatus.ACTIVE
        elif self.failed_checks >= UNAVAILABLE_AFTER_CHECKS:
            # Twice in a row: one slow answer from a busy backend is not an outage.
            self.status = LlmStatus.UNAVAILABLE

    @property
    def endpoints(self) -> frozenset[Endpoint]:
        """What it publishes: the configured endpoints, or what its type serves by default."""
        configured = self.config.endpoints
        return frozenset(configured) if configured else default_endpoints(self.provider)

    def endpoint_of(self, value: str) -> Endpoint | None:
        """A task's endpoint, if this provider publishes it (None: an endpoint it does
        not, or one this publisher does not know)."""
        try:
            endpoint = Endpoint(value)
        except ValueError:
            return None
        return endpoint if endpoint in self.endpoints else None

    def spec(self) -> ProviderSpec:
        config = self.config
        extra: dict[str, object] = {"maxConcurrency": config.max_concurrency}
        if self.wake_recipe is not None:
            extra["wake"] = self.wake_recipe.type_name
        if config.sleep_after_idle_seconds is not None:
            extra["sleepAfterIdleSeconds"] = config.sleep_after_idle_seconds
        return ProviderSpec(
            name=config.name,
            type=config.type,
            model=self.provider.model,
            tier=config.tier,
            description=config.description,
            extra_config=extra,
            initial_status=self.status,
            wake_max_wait_seconds=self.wake_recipe.max_wait_seconds if self.wake_recipe else None,
            max_concurrency=config.max_concurrency,
            endpoints=[e for e in Endpoint if e in self.endpoints],
            aliases=list(config.aliases),
        )
