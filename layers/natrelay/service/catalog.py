"""The LLM rows as clients see them: which exist, which can answer now."""

from __future__ import annotations

from natrelay.errors import LlmNotFoundError
from natrelay.service.access import Principal
from natrelay.service.context import Context
from natrelay.store import LlmRecord
from natrelay.wire import LlmStatus


def _not_found(name: str) -> LlmNotFoundError:
    return LlmNotFoundError(f"the model {name!r} does not exist", param="model")


class Catalog:
    def __init__(self, ctx: Context) -> None:
        self.llms = ctx.stores.llms
        self.keys = ctx.stores.keys
        self.liveness = ctx.liveness
        self.clock = ctx.clock

    async def all(self, principal: Principal) -> list[LlmRecord]:
        """Every row the caller may use."""
        return [r for r in await self.llms.all() if principal.may_use(r.name)]

    async def serving_rows(self, principal: Principal) -> list[LlmRecord]:
        """Rows the caller may use that can answer now: active, or hibernating and
        wakeable, with a live publisher."""
        return [r for r in await self.all(principal) if self.serving(r)]

    async def get(self, principal: Principal, name: str) -> LlmRecord:
        """The row; a model outside the caller's scope is answered as an unknown one."""
        row = await self.llms.get(name) if principal.may_use(name) else None
        if row is None:
            raise _not_found(name)
        return row

    async def delete(self, name: str) -> None:
        """Delete the row and release its name (admins): another key may publish it."""
        deleted = await self.llms.delete(name)
        released = await self.keys.release(name)
        if not (deleted or released):
            raise _not_found(name)

    def serving(self, row: LlmRecord) -> bool:
        """Can the row answer now (directly, or after a wake)?"""
        if row.status in (LlmStatus.INACTIVE, LlmStatus.UNAVAILABLE):
            return False
        return self.liveness.alive(row.last_heartbeat_at, self.clock())
