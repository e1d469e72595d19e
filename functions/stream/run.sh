#!/bin/bash
# StreamFunction's start script. The Lambda Web Adapter (a layer, started through
# AWS_LAMBDA_EXEC_WRAPPER=/opt/bootstrap) runs this, waits for the app on $PORT and streams
# each Function URL response from it. The natrelay package and its deps come from the
# RelayLayer, which Lambda unpacks to /opt/python.
export PYTHONPATH="/opt/python${PYTHONPATH:+:$PYTHONPATH}"
exec python -m uvicorn --factory natrelay.web:create_app \
    --host 127.0.0.1 --port "${PORT:-8080}" --no-server-header
