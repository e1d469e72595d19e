"""Create natrelay's DynamoDB tables from template.yaml (for moto, DynamoDB Local, tests)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from natrelay_infra.template import table_definitions


@dataclass(frozen=True)
class TableNames:
    llms: str
    tasks: str
    keys: str

    @classmethod
    def with_prefix(cls, prefix: str) -> TableNames:
        return cls(llms=f"{prefix}Llms", tasks=f"{prefix}Tasks", keys=f"{prefix}Keys")


_LOGICAL_IDS = {"llms": "LlmsTable", "tasks": "TasksTable", "keys": "KeysTable"}


def index_keys() -> dict[str, dict[str, frozenset[str]]]:
    """The key attributes of each global secondary index, per table (`llms`, `tasks`)."""
    defs = table_definitions()
    return {
        attr: {
            index["IndexName"]: frozenset(key["AttributeName"] for key in index["KeySchema"])
            for index in defs[logical_id]["create"].get("GlobalSecondaryIndexes", [])
        }
        for attr, logical_id in _LOGICAL_IDS.items()
    }


def create_tables(client: Any, names: TableNames) -> None:
    """Create each table (idempotent: an existing table is left as it is)."""
    defs = table_definitions()
    # ListTables answers 100 names a page: read them all, or an existing table past the
    # first page would be created again (ResourceInUseException).
    pages = client.get_paginator("list_tables").paginate()
    existing = {name for page in pages for name in page.get("TableNames", [])}
    for attr, logical_id in _LOGICAL_IDS.items():
        name = getattr(names, attr)
        if name in existing:
            continue
        spec = defs[logical_id]
        client.create_table(TableName=name, **spec["create"])
        client.get_waiter("table_exists").wait(
            TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30}
        )
        ttl = spec["ttl"]
        if ttl and ttl.get("Enabled"):
            client.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": True},
            )
