"""Who is calling: bearer tokens to principals (stored keys and the simple mode's
static tokens), and what a principal may see."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from fnmatch import fnmatchcase

from natrelay.errors import AuthError
from natrelay.service.context import Context
from natrelay.store import KeyRecord
from natrelay.wire import Priority, Role

KEY_PREFIX = "nrk_"
# Exactly what new_key_secret makes: anything else is refused before any read.
_KEY = re.compile(r"^nrk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
MAX_BEARER_LENGTH = 512
# Key ids found unknown are remembered for the cache time too (a client repeating a bad
# key costs one read per period), the most recent this many: a flood of made-up ids
# pushes out only other made-up ids, never a real key.
_CACHE_CAP = 10_000
STATIC_IDS = {
    Role.ADMIN: "static-admin",
    Role.CLIENT: "static-client",
    Role.PUBLISHER: "static-publisher",
}


def hash_secret(secret: str) -> str:
    """What is stored of a key's secret (its 256 random bits need no slow hash)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_key_secret() -> tuple[str, str, str]:
    """(key id, the bearer token to hand out once, the hash to store)."""
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return key_id, f"{KEY_PREFIX}{key_id}_{secret}", hash_secret(secret)


@dataclass(frozen=True)
class Principal:
    """The caller of a request: a key's id, role, model scope and limits."""

    key_id: str
    role: Role
    models: tuple[str, ...] | None = None
    rpm: int | None = None
    concurrency: int | None = None
    tokens_per_day: int | None = None
    # The class its requests queue in (service.dispatch), and the conversation a
    # request names (X-Natrelay-Session: service.affinity).
    priority: Priority = Priority.INTERACTIVE
    conversation: str | None = None

    @classmethod
    def of(cls, key: KeyRecord) -> Principal:
        return cls(
            key_id=key.id,
            role=key.role,
            models=key.models,
            rpm=key.rpm,
            concurrency=key.concurrency,
            tokens_per_day=key.tokens_per_day,
            priority=key.priority,
        )

    def may_use(self, model: str) -> bool:
        """Is `model` in this caller's scope (admins and unscoped keys: every model)?"""
        if self.role is Role.ADMIN or self.models is None:
            return True
        return any(fnmatchcase(model, pattern) for pattern in self.models)

    @property
    def limited(self) -> bool:
        return any(v is not None for v in (self.rpm, self.concurrency, self.tokens_per_day))


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


class Access:
    """Authenticates bearer tokens; verified keys are cached for key_cache_seconds."""

    def __init__(self, ctx: Context) -> None:
        self.keys = ctx.stores.keys
        self.clock = ctx.clock
        s = ctx.settings
        self.cache_seconds = s.key_cache_seconds
        self.static = {
            role: token
            for role, token in (
                (Role.ADMIN, s.admin_token.get_secret_value()),
                (Role.CLIENT, s.client_token.get_secret_value()),
                (Role.PUBLISHER, s.publish_token.get_secret_value()),
            )
            if token
        }
        # Keys that exist (as many as the table holds), and ids that do not (capped).
        self._cache: dict[str, tuple[KeyRecord, float]] = {}
        self._unknown: OrderedDict[str, float] = OrderedDict()

    async def authenticate(self, header: str | None) -> Principal:
        """The principal of an `Authorization: Bearer ...` header; AuthError if none."""
        scheme, _, token = (header or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthError("missing bearer token: send 'Authorization: Bearer <token>'")
        if len(token) > MAX_BEARER_LENGTH or not token.isascii() or not token.isprintable():
            raise AuthError("invalid bearer token")
        for role, static in self.static.items():
            if _same(static, token):
                return Principal(key_id=STATIC_IDS[role], role=role)
        match = _KEY.match(token)
        if match is None:
            raise AuthError("invalid bearer token")
        key_id, secret = match.groups()
        key = await self._key(key_id)
        if key is None or not _same(key.secret_hash, hash_secret(secret)):
            raise AuthError("invalid bearer token")
        self._usable(key)
        return Principal.of(key)

    async def _key(self, key_id: str) -> KeyRecord | None:
        now = self.clock()
        cached = self._cache.get(key_id)
        if cached is not None and now - cached[1] < self.cache_seconds:
            return cached[0]
        unknown_since = self._unknown.get(key_id)
        if unknown_since is not None and now - unknown_since < self.cache_seconds:
            return None
        key = await self.keys.get(key_id)
        if key is None:
            self._cache.pop(key_id, None)
            self._unknown[key_id] = now
            self._unknown.move_to_end(key_id)
            while len(self._unknown) > _CACHE_CAP:
                self._unknown.popitem(last=False)
        else:
            self._unknown.pop(key_id, None)
            self._cache[key_id] = (key, now)
        return key

    @staticmethod
    def credential(token: str) -> str:
        """What a session opened with `token` remembers of it: a stored key's secret hash
        (as its key item holds it), else the static token's hash."""
        match = _KEY.match(token)
        return hash_secret(match[2] if match else token)

    async def still_valid(self, key_id: str, credential: str) -> Principal:
        """The principal of a key that logged in with `credential`, as long as that still
        works: not revoked or expired (within the key cache time), nor a static token
        since changed. AuthError otherwise."""
        for role, static_id in STATIC_IDS.items():
            if key_id == static_id:
                token = self.static.get(role)
                if token is None or not _same(hash_secret(token), credential):
                    raise AuthError("this token is no longer the relay's")
                return Principal(key_id=static_id, role=role)
        key = await self._key(key_id)
        if key is None or not _same(key.secret_hash, credential):
            raise AuthError("invalid bearer token")
        self._usable(key)
        return Principal.of(key)

    async def check_live(self, principal: Principal) -> None:
        """AuthError if the principal's stored key was revoked or expired since it was let
        in (seen within the key cache time); static tokens live as long as the process."""
        if principal.key_id in STATIC_IDS.values():
            return
        key = await self._key(principal.key_id)
        if key is None:
            raise AuthError(f"key {principal.key_id} no longer exists")
        self._usable(key)

    def _usable(self, key: KeyRecord) -> None:
        if key.revoked_at is not None:
            raise AuthError(f"key {key.id} was revoked")
        if not key.valid(self.clock()):
            raise AuthError(f"key {key.id} has expired")

    def forget(self, key_id: str) -> None:
        """Drop a cached key (this process revoked it: no need to wait)."""
        self._cache.pop(key_id, None)
        self._unknown.pop(key_id, None)
