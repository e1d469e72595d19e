"""Sessions of the relay's own web pages: the console.

A browser that logs in with an admin key gets an opaque random session id (its cookie),
never the key. Only the id's SHA-256 is stored, with an expiry, the page family it is
valid for and the key it was opened with. A session works only for its family, until it
expires, is closed (log out), or its key stops working (revoked, expired, or a static
token changed: seen within the key cache time). Its CSRF token is derived from the id
(a domain-separated hash): a page can put it in its forms, and only a holder of the
cookie can know it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from natrelay.errors import AuthError
from natrelay.service.access import Access, Principal
from natrelay.service.context import Context
from natrelay.store import PageSessionRecord
from natrelay.wire import Role

# The page family of the console (web.console).
CONSOLE_PAGES = "console"
SESSION_SECONDS = 12 * 3600
# What `open` makes (token_urlsafe(32)): anything else is refused before any read.
_SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{43}$")


def _digest(session_id: str, purpose: str = "session") -> str:
    return hashlib.sha256(f"natrelay-page-{purpose}:{session_id}".encode()).hexdigest()


class PageSessions:
    def __init__(self, ctx: Context, access: Access) -> None:
        store = ctx.stores.page_sessions
        assert store is not None, "Stores.on makes the page sessions' store"
        self.store = store
        self.access = access
        self.clock = ctx.clock

    async def open(self, principal: Principal, token: str, family: str) -> str:
        """A new session of `family` for the admin who logged in with `token`; its id."""
        if principal.role is not Role.ADMIN:
            raise AuthError(f"this is a {principal.role.value} key: the pages are for admins")
        session_id = secrets.token_urlsafe(32)
        now = self.clock()
        await self.store.put(
            PageSessionRecord(
                digest=_digest(session_id),
                family=family,
                key_id=principal.key_id,
                credential=self.access.credential(token),
                created_at=now,
                expires_at=now + SESSION_SECONDS,
            )
        )
        return session_id

    async def check(self, session_id: str | None, family: str) -> Principal:
        """The admin of a live session of `family`; AuthError for anything else."""
        if not session_id or not _SESSION_ID.match(session_id):
            raise AuthError("log in with an admin key")
        record = await self.store.get(_digest(session_id), self.clock())
        if record is None or record.family != family:
            raise AuthError("the session has ended: log in again")
        principal = await self.access.still_valid(record.key_id, record.credential)
        if principal.role is not Role.ADMIN:
            raise AuthError("log in with an admin key")
        return principal

    async def close(self, session_id: str | None) -> None:
        """End the session (log out): its cookie is worth nothing from now on."""
        if session_id and _SESSION_ID.match(session_id):
            await self.store.delete(_digest(session_id))

    @staticmethod
    def csrf_token(session_id: str) -> str:
        """The token a session's forms carry: derived from the id, so only its holder
        knows it."""
        return _digest(session_id, "csrf")[:43]

    @classmethod
    def csrf_ok(cls, session_id: str | None, token: str) -> bool:
        return bool(session_id) and hmac.compare_digest(
            cls.csrf_token(session_id or "").encode(), token.encode()
        )
