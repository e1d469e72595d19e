"""The requests the dev state journal keeps: which ones change state, and how one is
written down, read back and replayed against moto's WSGI app."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from werkzeug.test import EnvironBuilder
from werkzeug.wsgi import get_input_stream

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

# X-Amz-Target prefixes of the services whose state is kept, and their content type.
SERVICES = {
    "DynamoDB_20120810": ("dynamodb", "application/x-amz-json-1.0"),
    "secretsmanager": ("secretsmanager", "application/x-amz-json-1.1"),
    "AmazonSSM": ("ssm", "application/x-amz-json-1.1"),
}
_READS = ("Get", "Describe", "List", "BatchGet", "TransactGet", "Query", "Scan")


@dataclass(frozen=True)
class Entry:
    """One journaled request: its X-Amz-Target, body, and who sent it to which region."""

    target: str
    body: str
    access_key: str
    region: str

    @property
    def service(self) -> str:
        return SERVICES[self.target.split(".", 1)[0]][0]

    def line(self) -> bytes:
        record = {"t": self.target, "b": self.body, "k": self.access_key, "r": self.region}
        return (json.dumps(record, separators=(",", ":")) + "\n").encode()

    @classmethod
    def parse(cls, line: bytes) -> Entry:
        record = json.loads(line)
        return cls(record["t"], record["b"], record["k"], record["r"])

    def environ(self) -> dict[str, Any]:
        _, content_type = SERVICES[self.target.split(".", 1)[0]]
        scope = f"{self.access_key}/20200101/{self.region}/{self.service}/aws4_request"
        headers = {
            "X-Amz-Target": self.target,
            "Content-Type": content_type,
            # moto reads the account and region from the scope; it checks no signature
            "Authorization": f"AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders=host, "
            "Signature=0",
        }
        builder = EnvironBuilder(
            path="/", method="POST", headers=list(headers.items()), data=self.body
        )
        try:
            return builder.get_environ()
        finally:
            builder.close()


def entry_of(environ: dict[str, Any]) -> Entry | None:
    """The request as a journal entry, if it may change kept state (its body is read
    and put back for the app)."""
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    prefix, _, operation = target.partition(".")
    if prefix not in SERVICES or operation.startswith(_READS):
        return None
    scope = _credential_scope(environ.get("HTTP_AUTHORIZATION", ""))
    if scope is None:
        return None
    body = get_input_stream(environ).read()
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    return Entry(target, body.decode("utf-8", "surrogateescape"), *scope)


def _credential_scope(authorization: str) -> tuple[str, str] | None:
    """(access key id, region) of a SigV4 Authorization header."""
    for part in authorization.replace(",", " ").split():
        if part.startswith("Credential="):
            fields = part.removeprefix("Credential=").split("/")
            if len(fields) == 5:
                return fields[0], fields[2]
    return None


def call(app: WsgiApp, entry: Entry) -> tuple[int, bytes]:
    """Send `entry` to the app directly; (status, body)."""
    status: list[str] = []

    def start_response(line: str, headers: Any, exc_info: Any = None) -> Callable[..., Any]:
        status.append(line)
        return lambda _: None

    body = b"".join(app(entry.environ(), start_response))
    return int(status[0].split()[0]), body
