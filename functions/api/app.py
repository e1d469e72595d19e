"""API Gateway HTTP API -> the relay app, through Mangum."""

from mangum import Mangum

from natrelay.web import create_app

# Built once per cold start; every invocation reuses the app and its DynamoDB client.
handler = Mangum(create_app(), lifespan="off")
