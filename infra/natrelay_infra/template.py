"""Read table definitions out of the SAM template, the one source of table schemas."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any

import yaml

_HERE = Path(__file__).resolve().parent


class _CfnLoader(yaml.SafeLoader):
    """A YAML loader that keeps CloudFormation short-form tags (!Ref, !Sub, ...) as data."""


def _cfn_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        assert isinstance(node, yaml.MappingNode)
        value = loader.construct_mapping(node, deep=True)
    key = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    return {key: value}


_CfnLoader.add_multi_constructor("!", _cfn_tag)


def template_path() -> Path:
    """The template: $NATRELAY_TEMPLATE, the copy shipped in the wheel, or the repo's."""
    env = os.environ.get("NATRELAY_TEMPLATE")
    if env:
        return Path(env)
    for candidate in (_HERE / "template.yaml", _HERE.parent.parent / "template.yaml"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError("template.yaml not found; set NATRELAY_TEMPLATE")


@cache
def load_template(path: Path | None = None) -> dict[str, Any]:
    with (path or template_path()).open(encoding="utf-8") as fh:
        data: dict[str, Any] = yaml.load(fh, Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass
    return data


def table_definitions(path: Path | None = None) -> dict[str, dict[str, Any]]:
    """CreateTable arguments (without TableName) per logical id of every DynamoDB table."""
    resources: dict[str, Any] = load_template(path)["Resources"]
    tables: dict[str, dict[str, Any]] = {}
    for logical_id, resource in resources.items():
        if resource.get("Type") != "AWS::DynamoDB::Table":
            continue
        props = resource["Properties"]
        args: dict[str, Any] = {
            "AttributeDefinitions": props["AttributeDefinitions"],
            "KeySchema": props["KeySchema"],
            "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
        }
        if "GlobalSecondaryIndexes" in props:
            args["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
        ttl = props.get("TimeToLiveSpecification")
        tables[logical_id] = {"create": args, "ttl": ttl}
    return tables
