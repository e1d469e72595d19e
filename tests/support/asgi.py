"""`python -m tests.support.asgi MODULE:ATTR [--factory] [--port N]`: an ASGI app under
uvicorn on 127.0.0.1, on a free port unless given one. It prints its URL first: the test
learns the port from the server that holds it, so parallel test workers never race for
one (as they would for a port found free and bound a moment later).
"""

from __future__ import annotations

import argparse
import os

import uvicorn

from tests.support.net import listen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("app", help="MODULE:ATTR")
    parser.add_argument("--factory", action="store_true", help="ATTR builds the app")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    sock = listen(args.port)
    print(f"http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    os.dup2(2, 1)  # whatever else it prints goes where its log goes
    config = uvicorn.Config(args.app, factory=args.factory, log_level="warning")
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
