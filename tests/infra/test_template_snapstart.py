"""The template's SnapStart switch: off by default; on, the API functions publish
versions that the HTTP API calls through an alias, on a runtime SnapStart supports (the
layer built for the same one), and cfn-lint accepts the template either way
(scripts/lint-template also builds both)."""

from __future__ import annotations

from typing import Any

import pytest
from cfnlint.api import ManualArgs, lint

from natrelay_infra.template import load_template, template_path

TEMPLATE = load_template()
RESOURCES: dict[str, Any] = TEMPLATE["Resources"]
API_FUNCTIONS = ("ApiFunction", "PollFunction")


def runtime_version(runtime: str) -> tuple[int, int]:
    major, minor = runtime.removeprefix("python").split(".")
    return int(major), int(minor)


def test_snapstart_is_off_unless_asked_for() -> None:
    parameter = TEMPLATE["Parameters"]["SnapStart"]
    assert parameter["Default"] == "false"
    assert parameter["AllowedValues"] == ["false", "true"]
    assert TEMPLATE["Conditions"]["SnapStartOn"] == {"Fn::Equals": [{"Ref": "SnapStart"}, "true"]}


@pytest.mark.parametrize("name", API_FUNCTIONS)
def test_the_api_functions_snapshot_published_versions(name: str) -> None:
    props = RESOURCES[name]["Properties"]
    assert props["SnapStart"] == {
        "Fn::If": ["SnapStartOn", {"ApplyOn": "PublishedVersions"}, {"Ref": "AWS::NoValue"}]
    }
    # SnapStart applies to published versions only: the HTTP API must call one
    assert props["AutoPublishAlias"] == "live"


def test_functions_and_layer_share_a_runtime_snapstart_supports() -> None:
    runtime = TEMPLATE["Globals"]["Function"]["Runtime"]
    assert runtime_version(runtime) >= (3, 12)
    layer = RESOURCES["RelayLayer"]
    assert layer["Properties"]["CompatibleRuntimes"] == [runtime]
    # layers/Makefile builds the layer (with its bytecode) for that Python
    assert layer["Metadata"]["BuildMethod"] == "makefile"
    makefile = (template_path().parent / "layers" / "Makefile").read_text()
    assert f"PYTHON_VERSION = {runtime.removeprefix('python')}\n" in makefile
    for name, resource in RESOURCES.items():
        if resource["Type"] == "AWS::Serverless::Function":
            assert resource["Properties"].get("Runtime", runtime) == runtime, name


def test_the_layer_does_not_ship_the_runtime_hooks() -> None:
    # a copy in /opt/python would shadow the runtime's: hooks registered there never run
    requirements = (template_path().parent / "layers" / "requirements.txt").read_text()
    assert "snapshot" not in requirements.lower()


@pytest.mark.parametrize("snapstart", ["false", "true"])
def test_cfn_lint_accepts_the_template(snapstart: str) -> None:
    text = template_path().read_text(encoding="utf-8")
    default = '    Default: "false"\n    AllowedValues: ["false", "true"]'
    assert text.count(default) == 1
    text = text.replace(default, default.replace('"false"', f'"{snapstart}"', 1))
    problems = lint(text, config=ManualArgs(regions=["us-east-1"]))
    assert [str(p) for p in problems] == []
