"""Managing keys (admins only): create, list, read, revoke."""

from __future__ import annotations

import logging

from natrelay.errors import KeyNotFoundError
from natrelay.service.access import Access, new_key_secret
from natrelay.service.context import Context
from natrelay.store import ConditionFailedError, KeyRecord
from natrelay.wire import KeyLimits, KeySpec

log = logging.getLogger("natrelay.service")


def _not_found(key_id: str) -> KeyNotFoundError:
    return KeyNotFoundError(f"there is no key {key_id!r}", param="id")


class KeyAdmin:
    def __init__(self, ctx: Context, access: Access) -> None:
        self.keys = ctx.stores.keys
        self.clock = ctx.clock
        self.access = access

    async def create(self, spec: KeySpec) -> tuple[KeyRecord, str]:
        """A new key and its secret (the only time the secret exists outside the caller)."""
        now = self.clock()
        key_id, secret, digest = new_key_secret()
        key = KeyRecord(
            id=key_id,
            label=spec.label,
            role=spec.role,
            secret_hash=digest,
            created_at=now,
            models=tuple(spec.models) if spec.models is not None else None,
            rpm=spec.rpm,
            concurrency=spec.concurrency,
            tokens_per_day=spec.tokens_per_day,
            priority=spec.priority,
            expires_at=now + spec.expires_in_seconds if spec.expires_in_seconds else None,
        )
        await self.keys.put(key)
        log.info("key %s created (%s, %s)", key.id, key.role.value, key.label)
        return key, secret

    async def all(self) -> list[KeyRecord]:
        return await self.keys.all()

    async def get(self, key_id: str) -> KeyRecord:
        key = await self.keys.get(key_id)
        if key is None:
            raise _not_found(key_id)
        return key

    async def set_limits(self, key_id: str, limits: KeyLimits) -> KeyRecord:
        """Change a key's limits (None: unlimited); every process sees them within the key
        cache time, this one at once."""
        try:
            key = await self.keys.set_limits(
                key_id,
                rpm=limits.rpm,
                concurrency=limits.concurrency,
                tokens_per_day=limits.tokens_per_day,
            )
        except ConditionFailedError as exc:
            raise _not_found(key_id) from exc
        self.access.forget(key_id)
        log.info("key %s limits changed", key_id)
        return key

    async def revoke(self, key_id: str) -> KeyRecord:
        try:
            key = await self.keys.revoke(key_id, self.clock())
        except ConditionFailedError as exc:
            raise _not_found(key_id) from exc
        self.access.forget(key_id)
        log.info("key %s revoked", key_id)
        return key
