"""The cookie of a page session (service.page_sessions): one name and path per page
family, HttpOnly, SameSite=Strict, and Secure unless configured off
(`NATRELAY_COOKIE_SECURE`: never guessed from the Host header, which a proxy may set to
127.0.0.1)."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from natrelay.service.page_sessions import SESSION_SECONDS
from natrelay.settings import Settings


@dataclass(frozen=True)
class PageCookie:
    name: str
    # Browsers send it to this path (and below) only: the page family's.
    path: str

    def read(self, request: Request) -> str | None:
        return request.cookies.get(self.name)

    def set(self, response: Response, session_id: str, settings: Settings) -> None:
        response.set_cookie(
            self.name,
            session_id,
            max_age=SESSION_SECONDS,
            path=self.path,
            secure=settings.cookie_secure,
            httponly=True,
            samesite="strict",
        )

    def clear(self, response: Response, settings: Settings) -> None:
        response.delete_cookie(
            self.name,
            path=self.path,
            secure=settings.cookie_secure,
            httponly=True,
            samesite="strict",
        )
