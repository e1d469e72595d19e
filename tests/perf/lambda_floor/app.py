"""The floor of an API handler's INIT: Starlette behind Mangum with a boto3 DynamoDB client.

What any handler of natrelay's shape must import and build; the benchmark imports it in a
fresh interpreter beside natrelay's handlers (tests/perf/cold.py).
"""

from __future__ import annotations

import boto3
from mangum import Mangum
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

client = boto3.client("dynamodb")


async def item(request: Request) -> Response:
    found = client.get_item(TableName="floor", Key={"pk": {"S": request.path_params["pk"]}})
    return JSONResponse(found.get("Item", {}))


handler = Mangum(Starlette(routes=[Route("/items/{pk}", item)]), lifespan="off")
