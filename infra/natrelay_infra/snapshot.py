"""The embedded moto's state written out as requests that rebuild it (the journal's
snapshots): tables with their items, secrets, parameters. Items DynamoDB's TTL would
have deleted are left out."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from natrelay_infra.entries import SERVICES, Entry, WsgiApp, call

_BATCH = 25  # items per BatchWriteItem, DynamoDB's limit


def snapshot_entries(
    app: WsgiApp, scopes: Iterable[tuple[str, str, str]], *, now: float
) -> Iterator[Entry]:
    """Requests that rebuild the app's state in each (access key, region, service).

    Once per region and service: moto puts every access key it did not issue itself in
    one account, so two keys would read (and write back) the same state twice."""
    makers = {"dynamodb": _tables, "secretsmanager": _secrets, "ssm": _parameters}
    once = {(region, service): key for key, region, service in sorted(scopes, reverse=True)}
    for (region, service), access_key in sorted(once.items()):
        ask = _Asker(app, access_key, region, service)
        yield from makers[service](ask, now)


class _Asker:
    """Calls one service of the app in one scope; each answer as JSON."""

    _PREFIX = {service: prefix for prefix, (service, _) in SERVICES.items()}

    def __init__(self, app: WsgiApp, access_key: str, region: str, service: str) -> None:
        self.app, self.access_key, self.region = app, access_key, region
        self.prefix = self._PREFIX[service]

    def entry(self, operation: str, payload: dict[str, Any]) -> Entry:
        body = json.dumps(payload, separators=(",", ":"))
        return Entry(f"{self.prefix}.{operation}", body, self.access_key, self.region)

    def __call__(self, operation: str, payload: dict[str, Any]) -> dict[str, Any]:
        status, body = call(self.app, self.entry(operation, payload))
        if status >= 300:
            raise RuntimeError(f"{operation} answered {status}: {body[:200]!r}")
        answer: dict[str, Any] = json.loads(body or b"{}")
        return answer

    def pages(
        self, operation: str, payload: dict[str, Any], token: str, next_token: str = ""
    ) -> Iterator[dict[str, Any]]:
        """Every page of a paginated read (`token`: the answer's field that says where
        the next page starts; `next_token`: the request's, if named otherwise)."""
        while True:
            page = self(operation, payload)
            yield page
            if not page.get(token):
                return
            payload = {**payload, (next_token or token): page[token]}


_INDEX_FIELDS = ("IndexName", "KeySchema", "Projection")


def _tables(ask: _Asker, now: float) -> Iterator[Entry]:
    names = [
        name
        for page in ask.pages("ListTables", {}, "LastEvaluatedTableName", "ExclusiveStartTableName")
        for name in page.get("TableNames", [])
    ]
    for name in names:
        table = ask("DescribeTable", {"TableName": name})["Table"]
        create: dict[str, Any] = {
            "TableName": name,
            "AttributeDefinitions": table["AttributeDefinitions"],
            "KeySchema": table["KeySchema"],
            "BillingMode": table.get("BillingModeSummary", {}).get("BillingMode", "PROVISIONED"),
        }
        throughput = {
            k: v
            for k, v in table.get("ProvisionedThroughput", {}).items()
            if k in ("ReadCapacityUnits", "WriteCapacityUnits")
        }
        provisioned = create["BillingMode"] == "PROVISIONED"
        if provisioned:
            create["ProvisionedThroughput"] = throughput
        for kind in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
            indexes = [{k: i[k] for k in _INDEX_FIELDS} for i in table.get(kind, [])]
            if indexes and provisioned and kind.startswith("Global"):
                for index in indexes:
                    index["ProvisionedThroughput"] = throughput
            if indexes:
                create[kind] = indexes
        if table.get("StreamSpecification"):
            create["StreamSpecification"] = table["StreamSpecification"]
        yield ask.entry("CreateTable", create)
        ttl = ask("DescribeTimeToLive", {"TableName": name}).get("TimeToLiveDescription", {})
        expiry = ttl.get("AttributeName") if ttl.get("TimeToLiveStatus") == "ENABLED" else None
        if expiry:
            spec = {"AttributeName": expiry, "Enabled": True}
            yield ask.entry(
                "UpdateTimeToLive", {"TableName": name, "TimeToLiveSpecification": spec}
            )
        batch: list[dict[str, Any]] = []
        expired: list[dict[str, Any]] = []
        key_names = [k["AttributeName"] for k in table["KeySchema"]]
        for page in ask.pages("Scan", {"TableName": name}, "LastEvaluatedKey", "ExclusiveStartKey"):
            for item in page.get("Items", []):
                if expiry and _expired(item.get(expiry), now):
                    expired.append({k: item[k] for k in key_names})
                    continue
                batch.append({"PutRequest": {"Item": item}})
                if len(batch) == _BATCH:
                    yield ask.entry("BatchWriteItem", {"RequestItems": {name: batch}})
                    batch = []
        if batch:
            yield ask.entry("BatchWriteItem", {"RequestItems": {name: batch}})
        # DynamoDB would have deleted these by now; moto never does. Deleted here too, so
        # that the running state is the snapshot's (a later write must find what a
        # replay will find).
        for key in expired:
            ask("DeleteItem", {"TableName": name, "Key": key})


def _expired(value: Any, now: float) -> bool:
    try:
        return isinstance(value, dict) and float(value["N"]) < now
    except (KeyError, ValueError):
        return False


def _secrets(ask: _Asker, now: float) -> Iterator[Entry]:
    for page in ask.pages("ListSecrets", {}, "NextToken"):
        for listed in page.get("SecretList", []):
            value = ask("GetSecretValue", {"SecretId": listed["ARN"]})
            create: dict[str, Any] = {"Name": listed["Name"]}
            for field in ("SecretString", "SecretBinary"):
                if field in value:
                    create[field] = value[field]
            for field in ("Description", "Tags"):
                if listed.get(field):
                    create[field] = listed[field]
            yield ask.entry("CreateSecret", create)


def _parameters(ask: _Asker, now: float) -> Iterator[Entry]:
    for page in ask.pages("DescribeParameters", {}, "NextToken"):
        for listed in page.get("Parameters", []):
            got = ask("GetParameter", {"Name": listed["Name"], "WithDecryption": True})
            parameter = got["Parameter"]
            put: dict[str, Any] = {
                "Name": parameter["Name"],
                "Value": parameter["Value"],
                "Type": parameter["Type"],
                "Overwrite": True,
            }
            if listed.get("Description"):
                put["Description"] = listed["Description"]
            yield ask.entry("PutParameter", put)
