"""Agents: which rows serve an agent, its status, and admins' apply.

An agent's target is a row's name or a backend model (a pool by model: every row
serving that model). Which rows may serve it is one rule, `may_serve`: a row of the
agent's own key; a row an admin shared (`sharedPool`); any row for an agent an admin
applied. So a publisher key never sends a client's prompt to another key's box unless
an admin said so. An agent is routed to its rows before the queue: each row's pool,
queue and wakes are then the row's own.
"""

from __future__ import annotations

import itertools
import zlib

from natrelay.errors import (
    EndpointNotServedError,
    LlmNotFoundError,
    NameOwnedError,
    PublisherOfflineError,
    RowChangedError,
)
from natrelay.service.access import Principal
from natrelay.service.agent_bodies import AGENT_ENDPOINTS
from natrelay.service.catalog import Catalog
from natrelay.service.context import Context
from natrelay.store import AgentRecord, AgentWrite, ApplyConflictError, LlmRecord
from natrelay.store.records import AGENT_OWNER
from natrelay.wire import AgentApplied, AgentDocument, AgentSpec, Endpoint, LlmStatus

# Better first: the order rows are tried in, and which status an agent shows.
_RANK = {
    LlmStatus.ACTIVE: 0,
    LlmStatus.HIBERNATING: 1,
    LlmStatus.UNAVAILABLE: 2,
    LlmStatus.INACTIVE: 3,
}


def may_serve(agent: LlmRecord, row: LlmRecord) -> bool:
    """Whether `row` may serve `agent`: an admin's agent, any row; a published agent,
    its own key's rows and those an admin shared."""
    if row.agent is not None:
        return False
    return agent.owner in (AGENT_OWNER, row.owner) or row.shared_pool


def record_of(doc: AgentDocument | AgentSpec) -> AgentRecord:
    return AgentRecord(
        target=doc.target_row,
        target_model=doc.target_model,
        system_prompt=doc.system_prompt,
        defaults=doc.defaults.given(),
    )


def _changed(doc: AgentDocument, current: LlmRecord) -> list[str]:
    want, have = record_of(doc), current.agent or AgentRecord()
    changed = [
        name
        for name, a, b in (
            ("target", (want.target, want.target_model), (have.target, have.target_model)),
            ("systemPrompt", want.system_prompt, have.system_prompt),
            ("defaults", want.defaults, have.defaults),
            ("description", doc.description, current.description),
        )
        if a != b
    ]
    return changed


class Agents:
    def __init__(self, ctx: Context, catalog: Catalog) -> None:
        self.llms = ctx.stores.llms
        self.store = ctx.stores.agents
        self.clock = ctx.clock
        self.liveness = ctx.liveness
        self.catalog = catalog
        self._turn = itertools.count()

    # --- what serves an agent ------------------------------------------------------------

    async def rows(self, agent: LlmRecord) -> list[LlmRecord]:
        """The rows that may serve the agent (its target, or its model's pool)."""
        spec = agent.agent
        assert spec is not None
        if spec.target is not None:
            row = await self.llms.get(spec.target)
            return [row] if row is not None and may_serve(agent, row) else []
        assert self.store is not None
        found = []
        for name in await self.store.rows_of(spec.target_model or ""):
            row = await self.llms.get(name)
            if (
                row is not None
                and not row.public
                and row.model == spec.target_model
                and may_serve(agent, row)
            ):
                found.append(row)
        return found

    def _published_gone(self, agent: LlmRecord) -> bool:
        """A published agent whose publisher is gone (its own members stopped beating)."""
        spec = agent.agent
        now = self.clock()
        return bool(spec and spec.published) and (
            agent.pool_status(now, self.liveness.timeout) is LlmStatus.INACTIVE
        )

    async def status(self, agent: LlmRecord) -> LlmStatus:
        """As its best row's: active, hibernating, unavailable; inactive when none serves
        (or, published, its publisher is gone)."""
        if self._published_gone(agent):
            return LlmStatus.INACTIVE
        statuses = [self.catalog.status(r) for r in await self.rows(agent)]
        return min(statuses, key=_RANK.__getitem__, default=LlmStatus.INACTIVE)

    async def targets(
        self, agent: LlmRecord, endpoint: Endpoint, key: str | None = None
    ) -> list[LlmRecord]:
        """The rows to try for a request to the agent, in order: those serving now
        (taken in turn, so a pool by model spreads its requests; with an
        Idempotency-Key `key`, in the key's turn, so its retry goes where it went and
        finds its task), then those that can be woken, then the rest (whose refusal
        says why). PublisherOfflineError if none may serve it; EndpointNotServedError
        for an API agents do not answer."""
        if endpoint not in AGENT_ENDPOINTS:
            raise EndpointNotServedError(
                f"{agent.name!r} is an agent: it answers /v1/chat/completions, "
                "/v1/responses and /v1/messages",
                param="model",
            )
        rows = [] if self._published_gone(agent) else await self.rows(agent)
        if not rows:
            raise self.offline(agent)
        ranked = sorted(rows, key=lambda r: _RANK[self.catalog.status(r)])
        best = _RANK[self.catalog.status(ranked[0])]
        first = [r for r in ranked if _RANK[self.catalog.status(r)] == best]
        turn = (next(self._turn) if key is None else zlib.crc32(key.encode())) % len(first)
        return first[turn:] + first[:turn] + ranked[len(first) :]

    def offline(self, agent: LlmRecord) -> PublisherOfflineError:
        """The error of an agent no row can serve now."""
        what = "its publisher is offline" if self._published_gone(agent) else "no row serves it"
        return PublisherOfflineError(f"the agent {agent.name!r} cannot answer now: {what}")

    # --- admins ----------------------------------------------------------------------

    async def all(self, principal: Principal) -> list[LlmRecord]:
        """Every agent the caller may call."""
        return [
            r for r in await self.llms.all() if r.agent is not None and principal.may_use(r.name)
        ]

    async def get(self, principal: Principal, name: str) -> LlmRecord:
        row = await self.llms.fresh(name) if principal.may_use(name) else None
        if row is None or row.agent is None:
            raise LlmNotFoundError(f"there is no agent {name!r}", param="name")
        return row

    async def delete(self, name: str) -> None:
        """Delete the agent and release its name (a published one comes back when its
        publisher registers again)."""
        row = await self.llms.fresh(name)
        if row is None or row.agent is None:
            raise LlmNotFoundError(f"there is no agent {name!r}", param="name")
        await self.catalog.delete(name)

    async def apply(self, docs: list[AgentDocument]) -> list[AgentApplied]:
        """Create or replace the agents, all or none. InvalidRequestError names the
        document at fault; NameOwnedError: a name a key owns (or a row's); RowChangedError:
        an agent changed meanwhile."""
        assert self.store is not None
        writes, done = [], []
        for i, doc in enumerate(docs):
            current = await self.llms.fresh(doc.name)
            if current is not None and (current.agent is None or current.owner != AGENT_OWNER):
                what = "a published agent" if current.agent is not None else f"a {current.kind} row"
                raise NameOwnedError(
                    f"documents[{i}].name: {doc.name!r} is {what}; choose another name, or "
                    f"release it first (natrelay llm delete {doc.name})",
                    param=f"documents[{i}].name",
                )
            changed = ["target"] if current is None else _changed(doc, current)
            action = "created" if current is None else ("updated" if changed else "unchanged")
            done.append(AgentApplied(name=doc.name, action=action, changed=changed))
            if action != "unchanged":
                writes.append(AgentWrite(doc.name, record_of(doc), doc.description))
        if not writes:
            return done
        try:
            await self.store.apply(writes, self.clock())
        except ApplyConflictError as exc:
            name = writes[exc.index].name
            where = f"documents[{[d.name for d in docs].index(name)}].name"
            if exc.owner is not None and exc.owner != AGENT_OWNER:
                raise NameOwnedError(
                    f"the name {name!r} belongs to a publisher key or a public row; choose "
                    "another name",
                    param=where,
                ) from exc
            raise RowChangedError(
                f"{name!r} changed while this apply ran; nothing was applied: apply again",
                param=where,
            ) from exc
        return done
