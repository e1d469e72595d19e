"""Secrets from AWS: the relay's own credentials (Secrets Manager, read once at start),
and the API keys of public rows' upstreams (a secret or an SSM parameter, read when a
call needs one; the caller caches them)."""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import SecretStr

from natrelay.observe import secret_call
from natrelay.settings import Settings
from natrelay.store._aws import aws_client
from natrelay.store._dynamo import off_loop

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
    client = aws_client("secretsmanager", region_name=settings.region)
    with secret_call():
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


class SecretMissingError(Exception):
    """A referenced secret or parameter does not exist, or the relay may not read it."""


# What AWS answers for a secret or parameter that is not there (or not ours to read).
_MISSING = frozenset(
    {
        "ResourceNotFoundException",
        "ParameterNotFound",
        "AccessDeniedException",
        "AccessDenied",
        "DecryptionFailure",
        "InvalidRequestException",
    }
)


def put_secret(client: Any, name: str, value: str) -> bool:
    """Create the Secrets Manager secret `name`, or give it a new value; True if created.
    (botocore's DEBUG lines would hold the value: `secret_call` drops them.)"""
    with secret_call():
        try:
            client.create_secret(Name=name, SecretString=value)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ResourceExistsException":
                raise
            client.put_secret_value(SecretId=name, SecretString=value)
            return False
    return True


class SecretWriteError(Exception):
    """The secret could not be written (the AWS error code only: its message may quote
    the value)."""


class SecretReader:
    """Reads API keys from AWS Secrets Manager secrets and SSM SecureString parameters
    (`endpoint`: moto's, locally), and writes secrets where the relay may (natrelay
    dev's moto). The clients are made on first use."""

    def __init__(self, region: str, endpoint: str | None = None) -> None:
        self.region = region
        self.endpoint = endpoint
        self._clients: dict[str, Any] = {}

    def _client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = aws_client(
                service, region_name=self.region, endpoint_url=self.endpoint
            )
        return self._clients[service]

    @off_loop
    def read(self, secrets_manager: str | None = None, ssm: str | None = None) -> str:
        """The key: a secret's string (its `apiKey` field if it is a JSON object) or a
        parameter's decrypted value. SecretMissingError names the AWS error code only."""
        try:
            with secret_call():
                return self._read(secrets_manager, ssm)
        except ClientError as exc:
            # `from None`: the AWS message may quote what it read; the code is enough
            code = str(exc.response.get("Error", {}).get("Code", "error"))
            raise SecretMissingError(code if code in _MISSING else f"AWS error {code}") from None
        except BotoCoreError as exc:
            raise SecretMissingError(type(exc).__name__) from None

    def _read(self, secrets_manager: str | None, ssm: str | None) -> str:
        if secrets_manager is not None:
            got = self._client("secretsmanager").get_secret_value(SecretId=secrets_manager)
            return _api_key(got.get("SecretString") or "")
        got = self._client("ssm").get_parameter(Name=ssm, WithDecryption=True)
        return str(got["Parameter"]["Value"])

    @off_loop
    def put(self, name: str, value: str) -> bool:
        """Create or update the secret `name`; True if created. SecretWriteError."""
        try:
            return put_secret(self._client("secretsmanager"), name, value)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", "error"))
            raise SecretWriteError(code) from None
        except BotoCoreError as exc:
            raise SecretWriteError(type(exc).__name__) from None


def _api_key(text: str) -> str:
    try:
        data = json.loads(text)
    except ValueError:
        return text
    if isinstance(data, dict) and isinstance(data.get("apiKey"), str):
        return str(data["apiKey"])
    return text
