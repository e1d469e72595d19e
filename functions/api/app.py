"""API Gateway HTTP API -> the relay app, through Mangum."""

from mangum import Mangum

from natrelay.web import create_app
from natrelay.web.snapstart import on_restore

# Built once per cold start (with SnapStart, once per published version); every
# invocation reuses the app and its DynamoDB client.
app = create_app()
handler = Mangum(app, lifespan="off")
# With SnapStart: new AWS clients and a fresh random seed in every restored instance.
on_restore(app)
