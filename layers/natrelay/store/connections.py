"""Sending to doorbell connections through the API Gateway Management API
(`POST {endpoint}/@connections/{id}`, i.e. PostToConnection)."""

from __future__ import annotations

import threading
from enum import StrEnum
from typing import TYPE_CHECKING

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from natrelay.store._aws import aws_client
from natrelay.store._dynamo import off_loop

if TYPE_CHECKING:
    from mypy_boto3_apigatewaymanagementapi import ApiGatewayManagementApiClient

# A ring is worth a few hundred milliseconds at most: the safety poll catches a lost one.
_CONFIG = Config(connect_timeout=2, read_timeout=3, retries={"max_attempts": 2, "mode": "standard"})


class Delivery(StrEnum):
    """What became of a message sent to a connection."""

    DELIVERED = "delivered"
    # The connection is closed for good (GoneException): forget it.
    GONE = "gone"
    # Not known to be delivered (an error, or a connection held elsewhere): keep it.
    FAILED = "failed"


class GatewayConnections:
    """The connections of one WebSocket API stage, through its management endpoint
    (its client made on the first send: most requests never ring)."""

    def __init__(
        self, endpoint: str, region: str, client: ApiGatewayManagementApiClient | None = None
    ) -> None:
        self.endpoint = endpoint
        self.region = region
        self._client = client
        self._making = threading.Lock()

    @property
    def client(self) -> ApiGatewayManagementApiClient:
        with self._making:
            if self._client is None:
                self._client = aws_client(
                    "apigatewaymanagementapi",
                    endpoint_url=self.endpoint,
                    region_name=self.region,
                    config=_CONFIG,
                )
            return self._client

    @off_loop
    def send(self, connection_id: str, data: bytes) -> Delivery:
        """Send one message; never raises for the connection's sake."""
        try:
            self.client.post_to_connection(ConnectionId=connection_id, Data=data)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            return Delivery.GONE if code == "GoneException" or status == 410 else Delivery.FAILED
        except BotoCoreError:
            return Delivery.FAILED
        return Delivery.DELIVERED
