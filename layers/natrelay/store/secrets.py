"""The relay's own credentials from AWS Secrets Manager (read once, at start)."""

from __future__ import annotations

import json

import boto3
from pydantic import SecretStr

from natrelay.settings import Settings

# Secret JSON key -> the setting it fills.
FIELDS = {
    "adminToken": "admin_token",
    "clientToken": "client_token",
    "publishToken": "publish_token",
}


def with_secret(settings: Settings) -> Settings:
    """`settings` with the tokens it lacks filled from `settings.secret_arn`, if set."""
    if not settings.secret_arn:
        return settings
    client = boto3.client("secretsmanager", region_name=settings.region)
    raw = client.get_secret_value(SecretId=settings.secret_arn).get("SecretString") or "{}"
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("the relay's secret must be a JSON object")
    update = {
        field: SecretStr(str(data[key]))
        for key, field in FIELDS.items()
        if data.get(key) and not getattr(settings, field).get_secret_value()
    }
    return settings.model_copy(update=update)
