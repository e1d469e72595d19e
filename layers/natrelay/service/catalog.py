"""The LLM rows as clients see them: which exist, which can answer now."""

from __future__ import annotations

from natrelay.errors import LlmNotFoundError
from natrelay.service.context import Context
from natrelay.store import LlmRecord
from natrelay.wire import LlmStatus


def _not_found(name: str) -> LlmNotFoundError:
    return LlmNotFoundError(f"the model {name!r} does not exist", param="model")


class Catalog:
    def __init__(self, ctx: Context) -> None:
        self.llms = ctx.stores.llms
        self.liveness = ctx.liveness
        self.clock = ctx.clock

    async def all(self) -> list[LlmRecord]:
        return await self.llms.all()

    async def serving_rows(self) -> list[LlmRecord]:
        """Rows that can answer now: active, or hibernating and wakeable, with a live publisher."""
        return [r for r in await self.llms.all() if self.serving(r)]

    async def get(self, name: str) -> LlmRecord:
        row = await self.llms.get(name)
        if row is None:
            raise _not_found(name)
        return row

    async def delete(self, name: str) -> None:
        if not await self.llms.delete(name):
            raise _not_found(name)

    def serving(self, row: LlmRecord) -> bool:
        """Can the row answer now (directly, or after a wake)?"""
        if row.status is LlmStatus.INACTIVE:
            return False
        return self.liveness.alive(row.last_heartbeat_at, self.clock())
