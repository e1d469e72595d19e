"""Tables created from template.yaml are the tables the template declares."""

from __future__ import annotations

import dataclasses
from typing import Any

from natrelay_infra.moto_server import MotoProcess
from natrelay_infra.tables import TableNames, create_tables
from natrelay_infra.template import load_template, table_definitions
from tests.support.stack import dynamodb_client, fresh_tables


def _declared(logical_id: str) -> dict[str, Any]:
    props: dict[str, Any] = load_template()["Resources"][logical_id]["Properties"]
    return props


def _keys(schema: list[dict[str, str]]) -> list[tuple[str, str]]:
    return [(k["AttributeName"], k["KeyType"]) for k in schema]


def test_every_template_table_has_a_name() -> None:
    assert len(table_definitions()) == len(dataclasses.fields(TableNames))
    assert set(table_definitions()) == {"LlmsTable", "TasksTable", "KeysTable"}


def test_short_form_tags_are_kept_as_data() -> None:
    outputs = load_template()["Outputs"]
    assert outputs["StreamUrl"]["Value"] == {"Fn::GetAtt": "StreamFunctionUrl.FunctionUrl"}


def test_created_tables_match_the_template(moto_server: MotoProcess) -> None:
    client = dynamodb_client(moto_server.endpoint)
    names = fresh_tables(moto_server.endpoint)
    for logical_id, name in (("LlmsTable", names.llms), ("TasksTable", names.tasks)):
        declared = _declared(logical_id)
        table = client.describe_table(TableName=name)["Table"]
        assert _keys(table["KeySchema"]) == _keys(declared["KeySchema"])
        assert sorted(
            (a["AttributeName"], a["AttributeType"]) for a in table["AttributeDefinitions"]
        ) == sorted(
            (a["AttributeName"], a["AttributeType"]) for a in declared["AttributeDefinitions"]
        )
        assert table["BillingModeSummary"]["BillingMode"] == declared["BillingMode"]

        created = {g["IndexName"]: g for g in table.get("GlobalSecondaryIndexes", [])}
        wanted = {g["IndexName"]: g for g in declared.get("GlobalSecondaryIndexes", [])}
        assert set(created) == set(wanted)
        for index, spec in wanted.items():
            assert _keys(created[index]["KeySchema"]) == _keys(spec["KeySchema"])
            got = created[index]["Projection"]
            assert got["ProjectionType"] == spec["Projection"]["ProjectionType"]
            assert sorted(got.get("NonKeyAttributes", [])) == sorted(
                spec["Projection"].get("NonKeyAttributes", [])
            )

        ttl = client.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        spec_ttl = declared.get("TimeToLiveSpecification")
        if spec_ttl and spec_ttl["Enabled"]:
            assert ttl["TimeToLiveStatus"] == "ENABLED"
            assert ttl["AttributeName"] == spec_ttl["AttributeName"]
        else:
            assert ttl["TimeToLiveStatus"] == "DISABLED"


def test_create_tables_is_idempotent(moto_server: MotoProcess) -> None:
    client = dynamodb_client(moto_server.endpoint)
    names = fresh_tables(moto_server.endpoint)
    client.put_item(TableName=names.llms, Item={"name": {"S": "kept"}})
    create_tables(client, names)
    assert client.get_item(TableName=names.llms, Key={"name": {"S": "kept"}})["Item"]
