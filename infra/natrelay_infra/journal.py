"""The embedded moto's state on disk, so `natrelay dev` keeps it across restarts.

Every request that changed moto's state and succeeded — DynamoDB, Secrets Manager, SSM
parameters — is appended to a journal as it was sent. Replaying the journal in order
rebuilds the state exactly, conditional writes included: each request carries its own
condition values (`:now`), and the server applies one request at a time. A line reaches
the operating system before moto's answer leaves (a `kill -9` loses nothing answered);
the file is fsynced every second (a power cut loses at most that second).

Now and then — at start, and when the journal outgrows the state it describes — the
state is written out as a snapshot (tables with their items, secrets, parameters) and a
new journal begins. The items DynamoDB's TTL would have deleted by then are deleted
(moto never applies TTL), from the snapshot and from the running state alike, so the
state stays as small as DynamoDB's would be. Snapshot and
journal share a generation number; a snapshot is complete once renamed into place, so a
crash at any point leaves one consistent pair.

It records requests, not moto's objects: a state written by one moto version replays in
another.
"""

from __future__ import annotations

import io
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from werkzeug.test import EnvironBuilder
from werkzeug.wsgi import get_input_stream

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

log = logging.getLogger("natrelay.dev")

FORMAT = 1
SYNC_SECONDS = 1.0
# Compact when the journal passes this size and twice the snapshot's.
COMPACT_BYTES = 16 * 1024 * 1024
_BATCH = 25  # items per BatchWriteItem, DynamoDB's limit

# X-Amz-Target prefixes of the services whose state is kept, and their content type.
_SERVICES = {
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
        return _SERVICES[self.target.split(".", 1)[0]][0]

    def line(self) -> bytes:
        record = {"t": self.target, "b": self.body, "k": self.access_key, "r": self.region}
        return (json.dumps(record, separators=(",", ":")) + "\n").encode()

    @classmethod
    def parse(cls, line: bytes) -> Entry:
        record = json.loads(line)
        return cls(record["t"], record["b"], record["k"], record["r"])

    def environ(self) -> dict[str, Any]:
        _, content_type = _SERVICES[self.target.split(".", 1)[0]]
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
    if prefix not in _SERVICES or operation.startswith(_READS):
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


class Journal:
    """The state directory's snapshot and journal; `wrap` journals an app's requests."""

    def __init__(self, directory: Path, *, compact_bytes: int = COMPACT_BYTES) -> None:
        self.directory = directory
        self.compact_bytes = compact_bytes
        self._scopes: set[tuple[str, str, str]] = set()
        self._io = threading.Lock()
        self._fd: int | None = None
        self._dirty = False
        self._journal_bytes = 0
        self._snapshot_bytes = 0
        self._generation = 0
        self._stop = threading.Event()
        self._syncer: threading.Thread | None = None

    # --- start: replay, then compact ------------------------------------------------

    def restore(self, app: WsgiApp) -> int:
        """Replay the newest snapshot and its journal into `app`, write a fresh snapshot,
        and start journaling; returns how many requests were replayed."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._generation = self._newest_generation()
        replayed = failed = 0
        for path in (self._snapshot(self._generation), self._journal(self._generation)):
            for entry in _entries(path):
                status, _ = call(app, entry)
                self._scopes.add((entry.access_key, entry.region, entry.service))
                replayed += 1
                failed += status >= 300
        if failed:
            log.warning("%d of %d saved requests did not replay in this moto", failed, replayed)
        self.compact(app)
        self._syncer = threading.Thread(target=self._sync_every_second, daemon=True)
        self._syncer.start()
        return replayed

    def _newest_generation(self) -> int:
        generations = [
            int(path.name.split(".")[1])
            for path in self.directory.glob("snapshot.*.jsonl")
            if path.name.split(".")[1].isdigit()
        ]
        return max(generations, default=0)

    def _snapshot(self, generation: int) -> Path:
        return self.directory / f"snapshot.{generation}.jsonl"

    def _journal(self, generation: int) -> Path:
        return self.directory / f"journal.{generation}.jsonl"

    # --- running ---------------------------------------------------------------------

    def wrap(self, app: WsgiApp) -> WsgiApp:
        """`app`, journaling each request that changed kept state. Not thread-safe: run
        it inside the server's one lock (see moto_server.serialized)."""

        def journaled(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
            entry = entry_of(environ)
            if entry is None:
                return list(app(environ, start_response))
            status: list[str] = []

            def capture(line: str, headers: Any, exc_info: Any = None) -> Any:
                status.append(line)
                return start_response(line, headers, exc_info)

            body = list(app(environ, capture))
            if status and status[0].startswith("2"):
                self.append(entry)
                if self._journal_bytes > max(self.compact_bytes, 2 * self._snapshot_bytes):
                    self.compact(app)
            return body

        return journaled

    def append(self, entry: Entry) -> None:
        line = entry.line()
        self._scopes.add((entry.access_key, entry.region, entry.service))
        with self._io:
            assert self._fd is not None, "restore() first"
            os.write(self._fd, line)  # in the OS's hands: a killed process loses nothing
            self._journal_bytes += len(line)
            self._dirty = True

    def _sync_every_second(self) -> None:
        while not self._stop.wait(SYNC_SECONDS):
            self.sync()

    def sync(self) -> None:
        with self._io:
            if self._fd is not None and self._dirty:
                os.fsync(self._fd)
                self._dirty = False

    def close(self) -> None:
        self._stop.set()
        if self._syncer is not None:
            self._syncer.join(timeout=5)
        self.sync()
        with self._io:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    # --- compaction ------------------------------------------------------------------

    def compact(self, app: WsgiApp) -> None:
        """Write the state as the next generation's snapshot; start its journal."""
        started = time.monotonic()
        generation = self._generation + 1
        final = self._snapshot(generation)
        temporary = final.with_suffix(".tmp")
        size = 0
        with _private(temporary) as out:
            for entry in snapshot_entries(app, sorted(self._scopes), now=time.time()):
                line = entry.line()
                out.write(line)
                size += len(line)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, final)
        _sync_directory(self.directory)
        with self._io:
            if self._fd is not None:
                os.close(self._fd)
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
            self._fd = os.open(self._journal(generation), flags, 0o600)
            self._journal_bytes, self._snapshot_bytes = 0, size
            self._dirty = False
        for old in range(self._generation, generation):
            self._snapshot(old).unlink(missing_ok=True)
            self._journal(old).unlink(missing_ok=True)
        self._generation = generation
        log.debug("state snapshot: %d bytes in %.3f s", size, time.monotonic() - started)


def _entries(path: Path) -> Iterator[Entry]:
    """The entries of a file; a torn last line (a crash mid-write) ends it."""
    if not path.exists():
        return
    with path.open("rb") as lines:
        for number, line in enumerate(lines, 1):
            try:
                yield Entry.parse(line)
            except (ValueError, KeyError):
                log.warning("%s: line %d is incomplete; replayed up to it", path.name, number)
                return


class _private:
    """A file only its owner may read (it holds secrets), opened for writing."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> Any:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self._file = os.fdopen(fd, "wb")
        return self._file

    def __exit__(self, *exc: object) -> None:
        self._file.close()


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- the state as requests ---------------------------------------------------------


def snapshot_entries(
    app: WsgiApp, scopes: Iterable[tuple[str, str, str]], *, now: float
) -> Iterator[Entry]:
    """Requests that rebuild the app's state in each (access key, region, service).

    Once per region and service: moto puts every access key it did not issue itself in
    one account, so two keys would read (and write back) the same state twice."""
    makers = {"dynamodb": _tables, "secretsmanager": _secrets, "ssm": _parameters}
    once = {(region, service): key for key, region, service in sorted(scopes, reverse=True)}
    for (region, service), access_key in sorted(once.items()):
        ask = _Asker(app, access_key, region, service)
        yield from makers[service](ask, now)


class _Asker:
    """Calls one service of the app in one scope; each answer as JSON."""

    _PREFIX = {service: prefix for prefix, (service, _) in _SERVICES.items()}

    def __init__(self, app: WsgiApp, access_key: str, region: str, service: str) -> None:
        self.app, self.access_key, self.region = app, access_key, region
        self.prefix = self._PREFIX[service]

    def entry(self, operation: str, payload: dict[str, Any]) -> Entry:
        body = json.dumps(payload, separators=(",", ":"))
        return Entry(f"{self.prefix}.{operation}", body, self.access_key, self.region)

    def __call__(self, operation: str, payload: dict[str, Any]) -> dict[str, Any]:
        status, body = call(self.app, self.entry(operation, payload))
        if status >= 300:
            raise RuntimeError(f"{operation} answered {status}: {body[:200]!r}")
        answer: dict[str, Any] = json.loads(body or b"{}")
        return answer

    def pages(
        self, operation: str, payload: dict[str, Any], token: str, next_token: str = ""
    ) -> Iterator[dict[str, Any]]:
        """Every page of a paginated read (`token`: the answer's field that says where
        the next page starts; `next_token`: the request's, if named otherwise)."""
        while True:
            page = self(operation, payload)
            yield page
            if not page.get(token):
                return
            payload = {**payload, (next_token or token): page[token]}


_INDEX_FIELDS = ("IndexName", "KeySchema", "Projection")


def _tables(ask: _Asker, now: float) -> Iterator[Entry]:
    names = [
        name
        for page in ask.pages("ListTables", {}, "LastEvaluatedTableName", "ExclusiveStartTableName")
        for name in page.get("TableNames", [])
    ]
    for name in names:
        table = ask("DescribeTable", {"TableName": name})["Table"]
        create: dict[str, Any] = {
            "TableName": name,
            "AttributeDefinitions": table["AttributeDefinitions"],
            "KeySchema": table["KeySchema"],
            "BillingMode": table.get("BillingModeSummary", {}).get("BillingMode", "PROVISIONED"),
        }
        throughput = {
            k: v
            for k, v in table.get("ProvisionedThroughput", {}).items()
            if k in ("ReadCapacityUnits", "WriteCapacityUnits")
        }
        provisioned = create["BillingMode"] == "PROVISIONED"
        if provisioned:
            create["ProvisionedThroughput"] = throughput
        for kind in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
            indexes = [{k: i[k] for k in _INDEX_FIELDS} for i in table.get(kind, [])]
            if indexes and provisioned and kind.startswith("Global"):
                for index in indexes:
                    index["ProvisionedThroughput"] = throughput
            if indexes:
                create[kind] = indexes
        if table.get("StreamSpecification"):
            create["StreamSpecification"] = table["StreamSpecification"]
        yield ask.entry("CreateTable", create)
        ttl = ask("DescribeTimeToLive", {"TableName": name}).get("TimeToLiveDescription", {})
        expiry = ttl.get("AttributeName") if ttl.get("TimeToLiveStatus") == "ENABLED" else None
        if expiry:
            spec = {"AttributeName": expiry, "Enabled": True}
            yield ask.entry(
                "UpdateTimeToLive", {"TableName": name, "TimeToLiveSpecification": spec}
            )
        batch: list[dict[str, Any]] = []
        expired: list[dict[str, Any]] = []
        key_names = [k["AttributeName"] for k in table["KeySchema"]]
        for page in ask.pages("Scan", {"TableName": name}, "LastEvaluatedKey", "ExclusiveStartKey"):
            for item in page.get("Items", []):
                if expiry and _expired(item.get(expiry), now):
                    expired.append({k: item[k] for k in key_names})
                    continue
                batch.append({"PutRequest": {"Item": item}})
                if len(batch) == _BATCH:
                    yield ask.entry("BatchWriteItem", {"RequestItems": {name: batch}})
                    batch = []
        if batch:
            yield ask.entry("BatchWriteItem", {"RequestItems": {name: batch}})
        # DynamoDB would have deleted these by now; moto never does. Deleted here too, so
        # that the running state is the snapshot's (a later write must find what a
        # replay will find).
        for key in expired:
            ask("DeleteItem", {"TableName": name, "Key": key})


def _expired(value: Any, now: float) -> bool:
    try:
        return isinstance(value, dict) and float(value["N"]) < now
    except (KeyError, ValueError):
        return False


def _secrets(ask: _Asker, now: float) -> Iterator[Entry]:
    for page in ask.pages("ListSecrets", {}, "NextToken"):
        for listed in page.get("SecretList", []):
            value = ask("GetSecretValue", {"SecretId": listed["ARN"]})
            create: dict[str, Any] = {"Name": listed["Name"]}
            for field in ("SecretString", "SecretBinary"):
                if field in value:
                    create[field] = value[field]
            for field in ("Description", "Tags"):
                if listed.get(field):
                    create[field] = listed[field]
            yield ask.entry("CreateSecret", create)


def _parameters(ask: _Asker, now: float) -> Iterator[Entry]:
    for page in ask.pages("DescribeParameters", {}, "NextToken"):
        for listed in page.get("Parameters", []):
            got = ask("GetParameter", {"Name": listed["Name"], "WithDecryption": True})
            parameter = got["Parameter"]
            put: dict[str, Any] = {
                "Name": parameter["Name"],
                "Value": parameter["Value"],
                "Type": parameter["Type"],
                "Overwrite": True,
            }
            if listed.get("Description"):
                put["Description"] = listed["Description"]
            yield ask.entry("PutParameter", put)
