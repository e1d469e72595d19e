"""The API Gateway stand-in (natrelay_infra.gateway) with the DynamoDB requests of its
`$connect` / `$disconnect` handling counted: `GET /_gateway/stats` adds `dynamodb`
(operations, as tests/support/counting.py counts them), `POST /_gateway/reset` is not
needed: the benchmark reads the totals and the number of connections they served."""

from __future__ import annotations

from natrelay.web.doorbell import GatewayEvents
from natrelay_infra.gateway import Gateway, parse_args, serve
from tests.support.counting import OpCounter


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    events = GatewayEvents()
    ops = OpCounter(events.relay.stores.client)
    gateway = Gateway(events, args.max_connection_seconds, args.idle_seconds)

    def counted() -> dict[str, object]:
        snap = ops.snapshot()
        return {"dynamodb": dict(snap["ops"]), "rru": snap["rru"], "wru": snap["wru"]}

    gateway.extra_stats = counted
    serve(gateway, args.port)


if __name__ == "__main__":
    main()
