"""The serialized moto server makes conditional writes atomic across threads.

Unserialized moto can let two conditional writes both win (seen: 2 winners in 2 of 30
rounds with `sys.setswitchinterval(1e-6)`, none at the default interval); that is too rare
to assert on reliably, so only the serialized half is tested.
"""

from __future__ import annotations

import sys
import threading
import uuid
from collections.abc import Iterator

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from natrelay_infra.moto_server import MotoProcess

THREADS = 12
ROUNDS = 15


@pytest.fixture
def eager_thread_switches() -> Iterator[None]:
    """Switch threads as often as possible, which is what widens moto's check-then-write gap."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


def _client(endpoint: str):  # type: ignore[no-untyped-def]
    # One session per client: creating clients from boto3's default session is not thread-safe.
    return boto3.session.Session().client(
        "dynamodb",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"max_attempts": 1}),
    )


def test_server_binds_loopback_on_a_free_port(moto_server: MotoProcess) -> None:
    assert moto_server.endpoint.startswith("http://127.0.0.1:")
    assert not moto_server.endpoint.endswith(":0")


@pytest.mark.usefixtures("eager_thread_switches")
def test_concurrent_conditional_puts_have_exactly_one_winner(moto_server: MotoProcess) -> None:
    table = f"race-{uuid.uuid4().hex[:8]}"
    admin = _client(moto_server.endpoint)
    admin.create_table(
        TableName=table,
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
    )
    clients = [_client(moto_server.endpoint) for _ in range(THREADS)]
    for client in clients:  # open each connection before the race
        client.describe_table(TableName=table)

    winners_per_round = []
    for round_ in range(ROUNDS):
        barrier = threading.Barrier(THREADS)
        winners: list[int] = []
        errors: list[str] = []

        def claim(client, me: int) -> None:  # type: ignore[no-untyped-def]
            barrier.wait(timeout=10)
            try:
                client.put_item(
                    TableName=table,
                    Item={"pk": {"S": f"key-{round_}"}, "owner": {"N": str(me)}},
                    ConditionExpression="attribute_not_exists(pk)",
                )
                winners.append(me)
            except ClientError as exc:
                errors.append(exc.response["Error"]["Code"])

        threads = [threading.Thread(target=claim, args=(c, i)) for i, c in enumerate(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert set(errors) <= {"ConditionalCheckFailedException"}
        stored = admin.get_item(TableName=table, Key={"pk": {"S": f"key-{round_}"}})["Item"]
        assert [int(stored["owner"]["N"])] == winners
        winners_per_round.append(len(winners))

    assert winners_per_round == [1] * ROUNDS
