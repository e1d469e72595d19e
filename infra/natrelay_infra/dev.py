"""`natrelay dev`: the relay API, its sweeper and an embedded DynamoDB (moto) in one process."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import secrets
import socket
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import uvicorn
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError

from natrelay.observe import configure_logging
from natrelay.store.secrets import put_secret
from natrelay.web import create_app
from natrelay.wire import Paths
from natrelay_infra.demo import (
    DEMO_MODELS,
    DemoPublisher,
    demo_config,
    wait_published,
    write_config,
)
from natrelay_infra.dev_args import allowed_hosts, is_loopback, is_unspecified, parser
from natrelay_infra.dev_banner import DevRelay, print_banner
from natrelay_infra.draining import Draining
from natrelay_infra.moto_server import MotoServer
from natrelay_infra.relay_config import relay_settings
from natrelay_infra.state import (
    StateBusyError,
    StateDir,
    default_state_dir,
    locked_state,
)
from natrelay_infra.stop_signal import StopOnSignal
from natrelay_infra.tables import TableNames, create_tables
from natrelay_infra.wake_controller import WakeController

# Only ever used on a loopback address; anything else gets generated tokens.
DEV_CLIENT_TOKEN = "dev-client-token"  # noqa: S105
DEV_PUBLISH_TOKEN = "dev-publish-token"  # noqa: S105
DEV_ADMIN_TOKEN = "dev-admin-token"  # noqa: S105
FAKE_AWS_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}

log = logging.getLogger("natrelay.dev")


def main(argv: list[str] | None = None) -> int:
    """Run until Ctrl-C or SIGTERM; returns the exit code."""
    args = parser().parse_args(argv)
    configure_logging(args.log_format, args.log_level.upper())
    if args.log_level == "debug":
        for name in ("werkzeug", "botocore", "boto3", "httpx"):
            logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        return _run(args)
    except KeyboardInterrupt:  # before the signal handlers are in place
        return 130


def _run(args: argparse.Namespace) -> int:
    with contextlib.ExitStack() as stack:
        try:
            sock = stack.enter_context(_bind(args.host, args.port))
        except OSError as exc:
            print(f"natrelay dev: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
            return 1
        try:
            endpoint, state = _dynamodb_and_state(stack, args)
        except _StartError as exc:
            print(f"natrelay dev: {exc}", file=sys.stderr)
            return exc.code
        try:
            embedded = not args.dynamodb_endpoint
            relay = _configure(args, sock, endpoint, embedded=embedded, state=state)
        except ValidationError as exc:
            print(f"natrelay dev: invalid settings: {exc}", file=sys.stderr)
            return 1
        if args.secret_from_env and args.dynamodb_endpoint:
            print("natrelay dev: --secret-from-env needs the embedded moto", file=sys.stderr)
            return 2
        if args.secret_from_env:
            problem = _put_secrets(args.secret_from_env, endpoint, relay.settings.region)
            if problem:
                print(f"natrelay dev: {problem}", file=sys.stderr)
                return 2
        if args.create_tables:
            try:
                create_tables(_dynamodb(endpoint, relay.settings.region), relay.tables)
            except (BotoCoreError, ClientError) as exc:
                print(
                    f"natrelay dev: cannot create the tables at {endpoint}: {exc}", file=sys.stderr
                )
                return 1
        stopper = stack.enter_context(StopOnSignal())
        app = Draining(create_app(relay.settings))
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                log_level=args.log_level,
                # the relay logs each request itself, with its route, key and model
                access_log=False,
                timeout_graceful_shutdown=2,  # drained requests end at once; this is a backstop
            )
        )
        api = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="uvicorn")
        api.start()
        stack.callback(_stop_server, server, api, app)
        if not _wait_started(server, api):
            print("natrelay dev: the relay API did not start (see the log above)", file=sys.stderr)
            return 1
        publisher = None
        if args.demo:
            publisher = _start_demo(stack, args, relay)
        print_banner(relay, publisher)
        if publisher is not None:
            ready = wait_published(
                relay.url,
                relay.client_token,
                DEMO_MODELS,
                publisher,
                should_stop=stopper.stopping.is_set,
            )
            if ready:
                print(f"demo ready: {', '.join(DEMO_MODELS)} published", flush=True)
            elif not stopper.stopping.is_set():
                log.warning("the demo publisher has not published its models (see its log)")
        while not stopper.stopping.wait(0.5):
            if not api.is_alive():
                print("natrelay dev: the relay API stopped", file=sys.stderr)
                return 1
            if publisher is not None:
                publisher.check()
        stopper.on_repeat = lambda: _hurry(server, publisher)
        if publisher is not None:
            # First, while the API still answers: it finishes its tasks and deregisters.
            publisher.stop()
        log.info("natrelay dev: stopping")
    return 0


class _StartError(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _dynamodb_and_state(
    stack: contextlib.ExitStack, args: argparse.Namespace
) -> tuple[str, StateDir | None]:
    """The DynamoDB to use (the given one, or an embedded moto) and the state directory
    that keeps the embedded one's state (None: --ephemeral, or not embedded)."""
    if args.dynamodb_endpoint:
        if args.state_dir or args.ephemeral:
            raise _StartError(
                "--state-dir and --ephemeral are for the embedded DynamoDB; with "
                "--dynamodb-endpoint the state lives in that DynamoDB",
                code=2,
            )
        return str(args.dynamodb_endpoint), None
    if args.ephemeral:
        return stack.enter_context(MotoServer()).endpoint, None
    try:
        state = stack.enter_context(locked_state(args.state_dir or default_state_dir()))
        moto = stack.enter_context(MotoServer(journal=state.journal()))
    except (StateBusyError, OSError) as exc:
        raise _StartError(str(exc)) from None
    if moto.restored:
        log.info("natrelay dev: state restored from %s", state.path)
    return moto.endpoint, state


def _configure(
    args: argparse.Namespace,
    sock: socket.socket,
    endpoint: str,
    *,
    embedded: bool,
    state: StateDir | None = None,
) -> DevRelay:
    """The relay's settings: our tables and tokens; the rest from NATRELAY_* as usual."""
    given = {
        "client": args.client_token,
        "publish": args.publisher_token,
        "admin": args.admin_token,
    }
    # Well-known tokens only on a loopback address over a local DynamoDB; on someone's
    # real tables (a deployed stack's), no admin token unless given.
    local_db = embedded or is_loopback(urlsplit(endpoint).hostname or "")
    if is_loopback(args.host) and local_db:
        defaults = {"client": DEV_CLIENT_TOKEN, "publish": DEV_PUBLISH_TOKEN}
        tokens = {
            role: token or defaults.get(role, DEV_ADMIN_TOKEN) for role, token in given.items()
        }
    elif state is not None:  # generated once, kept for the publishers configured with them
        tokens = state.tokens(given, _token)
    else:
        tokens = {role: token or _token() for role, token in given.items()}
    if not local_db:
        tokens["admin"] = args.admin_token or ""
    client_token, publish_token, admin_token = tokens["client"], tokens["publish"], tokens["admin"]
    prefix = args.table_prefix
    tables = TableNames(
        llms=args.llms_table or f"{prefix}Llms",
        tasks=args.tasks_table or f"{prefix}Tasks",
        keys=args.keys_table or f"{prefix}Keys",
    )
    fields: dict[str, Any] = {
        "log_format": args.log_format,
        "log_level": args.log_level.upper(),
        # one long-lived process, swept on its event loop (natrelay.web's lifespan)
        "mode": "server",
        "sweep_interval_seconds": args.sweep_interval,
        # Prometheus metrics at GET /metrics (admin token)
        "metrics": os.environ.get("NATRELAY_METRICS", "prometheus"),
        "allowed_hosts": allowed_hosts(args),
    }
    if "NATRELAY_COOKIE_SECURE" not in os.environ:
        fields["cookie_secure"] = False  # it serves plain http
    if args.heartbeat_timeout is not None:
        fields["heartbeat_timeout_seconds"] = args.heartbeat_timeout
    if embedded:  # public rows' API keys: secrets and parameters in the same moto
        fields.setdefault("secrets_endpoint", os.environ.get("NATRELAY_SECRETS_ENDPOINT", endpoint))
        fields["secrets_writable"] = True  # `natrelay secrets put` while it runs
    settings = relay_settings(
        endpoint,
        tables,
        client_token=client_token,
        publish_token=publish_token,
        admin_token=admin_token,
        **fields,
    )
    _aws_credentials(endpoint, embedded=embedded)
    host, port = sock.getsockname()[:2]
    url_host = "127.0.0.1" if is_unspecified(host) else host
    if ":" in url_host:
        url_host = f"[{url_host}]"
    if args.doorbell and not settings.doorbell_url:
        # served by this process, rung in-process (natrelay.web.doorbell)
        doorbell = f"ws://{url_host}:{port}{Paths.DOORBELL}"
        settings = settings.model_copy(update={"doorbell_url": doorbell})
    return DevRelay(
        url=f"http://{url_host}:{port}",
        dynamodb=endpoint,
        tables=tables,
        client_token=client_token,
        publish_token=publish_token,
        admin_token=admin_token,
        settings=settings,
        state=state,
        embedded=embedded,
    )


def _aws_credentials(endpoint: str, *, embedded: bool) -> None:
    """boto3 reads credentials from the environment only: fake ones where any will do."""
    if embedded:
        # moto takes any credentials; a profile named in the environment might not exist here.
        os.environ.update(FAKE_AWS_CREDENTIALS)
        os.environ.pop("AWS_PROFILE", None)
    elif is_loopback(urlsplit(endpoint).hostname or "") and not _has_credentials():
        for key, value in FAKE_AWS_CREDENTIALS.items():  # DynamoDB Local takes any
            os.environ.setdefault(key, value)


def _has_credentials() -> bool:
    return boto3.session.Session().get_credentials() is not None


def _put_secrets(pairs: list[str], endpoint: str, region: str) -> str | None:
    """Create each `NAME=VAR` secret in the embedded moto; the problem, if one."""
    client = boto3.session.Session().client(
        "secretsmanager", endpoint_url=endpoint, region_name=region
    )
    for pair in pairs:
        name, _, var = pair.partition("=")
        if not name or not var:
            return f"--secret-from-env {pair!r}: write NAME=VAR (e.g. natrelay/openai=OPENAI_KEY)"
        value = os.environ.get(var)
        if not value:
            return f"--secret-from-env {name}: the environment variable {var} is not set"
        created = put_secret(client, name, value)
        done = "created" if created else "updated"
        log.info("secret %s %s in the embedded moto from $%s", name, done, var)
    return None


def _dynamodb(endpoint: str, region: str) -> Any:
    config = Config(connect_timeout=5, retries={"max_attempts": 3, "mode": "standard"})
    return boto3.client("dynamodb", endpoint_url=endpoint, region_name=region, config=config)


def _token() -> str:
    return secrets.token_urlsafe(24)


@contextlib.contextmanager
def _bind(host: str, port: int) -> Iterator[socket.socket]:
    """Bind here rather than in uvicorn: errors are reported plainly and port 0 works."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say so, and
    # without it every keep-alive answer waits ~40 ms for Nagle's algorithm
    with socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
        yield sock


def _wait_started(server: uvicorn.Server, thread: threading.Thread, timeout: float = 30) -> bool:
    for _ in range(int(timeout / 0.05)):
        if server.started or not thread.is_alive():
            break
        thread.join(0.05)
    return server.started


def _hurry(server: uvicorn.Server, publisher: DemoPublisher | None) -> None:
    """A second Ctrl-C: stop without waiting for anyone."""
    if publisher is not None:
        publisher.kill()
    server.force_exit = True


def _stop_server(server: uvicorn.Server, thread: threading.Thread, app: Draining) -> None:
    # Waiting polls and clients are answered now, not cancelled after the grace.
    app.drain()
    server.should_exit = True
    thread.join(timeout=10)
    if thread.is_alive():
        server.force_exit = True
        thread.join(timeout=5)


def _start_demo(
    stack: contextlib.ExitStack, args: argparse.Namespace, relay: DevRelay
) -> DemoPublisher:
    controller = stack.enter_context(WakeController())
    if relay.state is not None:  # its session file too: a restart takes its models back
        workdir = relay.state.demo
    else:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="natrelay-dev-")))
    config = demo_config(
        relay.url,
        relay.publish_token,
        workdir,
        controller.url,
        heartbeat_timeout=relay.settings.heartbeat_timeout_seconds,
    )
    publisher = DemoPublisher(write_config(config, workdir / "publisher.yaml")).start()
    stack.callback(publisher.stop)  # also on an early exit; a no-op once stopped
    if args.pid_file is not None:
        args.pid_file.write_text(f"{publisher.pid}\n", encoding="utf-8")
        stack.callback(args.pid_file.unlink, missing_ok=True)
    return publisher


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
