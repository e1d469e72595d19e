"""Admins' changes to rows (`natrelay llm apply`): every document checked first, then
all written in one transaction, so nothing is half-applied."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from pydantic.alias_generators import to_camel

from natrelay.errors import InvalidRequestError, NameOwnedError, RowChangedError
from natrelay.service.context import Context
from natrelay.store import ApplyConflictError, LlmRecord, RowWrite, SecretMissingError
from natrelay.store.records import PUBLIC_OWNER
from natrelay.wire import PUBLIC, PUBLIC_TYPES, VIRTUAL, Applied, LlmDocument

# What only public rows have, and what only virtual rows have.
UPSTREAM_FIELDS = ("base_url", "api_key", "timeout_seconds")
POOL_FIELDS = ("max_queue_depth", "wake_after_queue_seconds", "shared_pool")

KeyReader = Callable[[dict[str, Any]], Coroutine[Any, Any, str]]


class _Refusal(Exception):
    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _ref(doc: LlmDocument) -> dict[str, Any] | None:
    if doc.api_key is None:
        return None
    return doc.api_key.model_dump(by_alias=True, exclude_none=True)


class RowAdmin:
    def __init__(self, ctx: Context, read_key: KeyReader) -> None:
        self.llms = ctx.stores.llms
        self.row_admin = ctx.stores.row_admin
        self.clock = ctx.clock
        self.read_key = read_key

    async def apply(self, docs: list[LlmDocument]) -> list[Applied]:
        """Create or change the rows the documents describe, all or none.

        InvalidRequestError names the document and field at fault (`documents[i].field`);
        NameOwnedError: a new public row's name belongs to a publisher key; RowChangedError:
        a row changed while this ran (apply again).
        """
        writes: list[RowWrite] = []
        done: list[Applied] = []
        for i, doc in enumerate(docs):
            current = await self.llms.fresh(doc.name)  # not the brief row cache
            try:
                write = await self._plan(doc, current)
            except _Refusal as exc:
                where = f"documents[{i}]" + (f".{to_camel(exc.field)}" if exc.field else "")
                raise InvalidRequestError(
                    f"{where} (row {doc.name!r}): {exc.message}", param=where
                ) from None
            writes.append(write)
            changed = sorted(
                to_camel(f.removeprefix("admin_").removesuffix("_ref"))
                for f in [*write.sets, *write.removes]
            )
            action = "created" if write.create else ("updated" if changed else "unchanged")
            done.append(Applied(name=doc.name, kind=write.kind, action=action, changed=changed))
        assert self.row_admin is not None
        try:
            await self.row_admin.apply(writes, self.clock())
        except ApplyConflictError as exc:
            name = docs[exc.index].name
            if exc.owner is not None and exc.owner != PUBLIC_OWNER:
                raise NameOwnedError(
                    f"the name {name!r} belongs to a publisher key; choose another name, or "
                    f"release it first (natrelay llm delete {name})",
                    param=f"documents[{exc.index}].name",
                ) from exc
            raise RowChangedError(
                f"the row {name!r} changed while this apply ran (created, deleted or "
                "re-published); nothing was applied: apply again",
                param=f"documents[{exc.index}].name",
            ) from exc
        return done

    async def _plan(self, doc: LlmDocument, current: LlmRecord | None) -> RowWrite:
        given = doc.given()
        kind = doc.kind or (current.kind if current else None)
        if current is not None and current.agent is not None:
            raise _Refusal("name", "it is an agent: change it with natrelay agent apply")
        if current is None:
            if kind != PUBLIC:
                raise _Refusal(
                    "kind",
                    "there is no such row; give kind: public to create one (virtual rows "
                    "are made by their publisher)",
                )
            return await self._create(doc, given)
        if doc.kind is not None and doc.kind != current.kind:
            raise _Refusal(
                "kind",
                f"it is a {current.kind} row; delete it first to make it {doc.kind}",
            )
        if current.public:
            return await self._public(doc, given, current)
        return self._virtual(doc, given, current)

    async def _check_key(self, doc: LlmDocument) -> None:
        ref = _ref(doc)
        if ref is None or doc.api_key is None:
            return
        try:
            await self.read_key(ref)
        except SecretMissingError as exc:
            raise _Refusal(
                "api_key", f"the relay cannot read {doc.api_key.describe} ({exc})"
            ) from None

    async def _create(self, doc: LlmDocument, given: set[str]) -> RowWrite:
        self._no_pool_fields(doc, given)
        kind_type = doc.type or PUBLIC_TYPES[0]
        if kind_type not in PUBLIC_TYPES:
            raise _Refusal("type", f"a public row's type is one of {list(PUBLIC_TYPES)}")
        for field in ("model", "base_url"):
            if getattr(doc, field) is None:
                raise _Refusal(field, "a public row needs it")
        await self._check_key(doc)
        sets: dict[str, Any] = {
            "type": kind_type,
            "model": doc.model,
            "base_url": doc.base_url,
            "api_key_ref": _ref(doc),
            "timeout_seconds": doc.timeout_seconds,
            "tier": doc.tier,
            "description": doc.description,
            "fallbacks": doc.fallbacks or None,
        }
        sets = {k: v for k, v in sets.items() if v is not None}
        return RowWrite(doc.name, PUBLIC, create=True, sets=sets)

    def _no_pool_fields(self, doc: LlmDocument, given: set[str]) -> None:
        for field in POOL_FIELDS:
            if field in given and getattr(doc, field) is not None:
                raise _Refusal(field, "only virtual rows (pools of publishers) have it")

    async def _public(self, doc: LlmDocument, given: set[str], row: LlmRecord) -> RowWrite:
        self._no_pool_fields(doc, given)
        sets: dict[str, Any] = {}
        removes: list[str] = []
        if "type" in given and doc.type not in PUBLIC_TYPES:
            raise _Refusal("type", f"a public row's type is one of {list(PUBLIC_TYPES)}")
        for field in ("type", "model", "base_url"):
            if field in given:
                value = getattr(doc, field)
                if value is None:
                    raise _Refusal(field, "a public row needs it")
                if value != getattr(row, field):
                    sets[field] = value
        if "api_key" in given and _ref(doc) != row.api_key_ref:
            if doc.api_key is None:
                removes.append("api_key_ref")
            else:
                await self._check_key(doc)
                sets["api_key_ref"] = _ref(doc)
        self._plain(
            doc, given, row, ("timeout_seconds", "tier", "description"), sets=sets, removes=removes
        )
        self._fallbacks(doc, given, row, sets, removes)
        return RowWrite(doc.name, PUBLIC, sets=sets, removes=tuple(removes))

    def _virtual(self, doc: LlmDocument, given: set[str], row: LlmRecord) -> RowWrite:
        for field in UPSTREAM_FIELDS:
            if field in given and getattr(doc, field) is not None:
                raise _Refusal(field, "only public rows have an upstream")
        for field in ("type", "model"):
            value = getattr(doc, field)
            if field in given and value is not None and value != getattr(row, field):
                raise _Refusal(
                    field,
                    f"its publisher sets it (it publishes {getattr(row, field)!r}); change it "
                    "in the publisher's config",
                )
        sets: dict[str, Any] = {}
        removes: list[str] = []
        # An admin's description and tier win over the publisher's; null gives them back.
        for field in ("description", "tier"):
            if field not in given:
                continue
            value, mine = getattr(doc, field), getattr(row, f"admin_{field}")
            if value is None and mine is not None:
                removes.append(f"admin_{field}")
            elif value is not None and value != getattr(row, field):
                sets[f"admin_{field}"] = value
        self._plain(
            doc,
            given,
            row,
            POOL_FIELDS,
            sets=sets,
            removes=removes,
        )
        self._fallbacks(doc, given, row, sets, removes)
        return RowWrite(doc.name, row.kind or VIRTUAL, sets=sets, removes=tuple(removes))

    @staticmethod
    def _plain(
        doc: LlmDocument,
        given: set[str],
        row: LlmRecord,
        fields: tuple[str, ...],
        *,
        sets: dict[str, Any],
        removes: list[str],
    ) -> None:
        """Fields the document gives that the row keeps as they are: set what changed,
        remove what it gives as null."""
        for field in fields:
            if field not in given:
                continue
            value, current = getattr(doc, field), getattr(row, field)
            if value is None:
                if current is not None:
                    removes.append(field)
            elif value != current:
                sets[field] = value

    @staticmethod
    def _fallbacks(
        doc: LlmDocument,
        given: set[str],
        row: LlmRecord,
        sets: dict[str, Any],
        removes: list[str],
    ) -> None:
        if "fallbacks" not in given:
            return
        wanted = tuple(doc.fallbacks or ())
        if wanted == row.fallbacks:
            return
        if wanted:
            sets["fallbacks"] = list(wanted)
        else:
            removes.append("fallbacks")
