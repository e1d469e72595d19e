"""What an operator needs from template.yaml: bounded logs, throttling, capped pollers,
protected key tables, alarms (cfn-lint and `sam validate --lint` run in scripts/lint-template)."""

from __future__ import annotations

from typing import Any

from natrelay_infra.template import load_template

TEMPLATE = load_template()
RESOURCES: dict[str, Any] = TEMPLATE["Resources"]


def of_type(kind: str) -> dict[str, Any]:
    return {name: r for name, r in RESOURCES.items() if r["Type"] == kind}


def test_every_function_has_a_log_group_with_retention() -> None:
    groups = of_type("AWS::Logs::LogGroup")
    named = {g["Properties"]["LogGroupName"]["Fn::Sub"] for g in groups.values()}
    for function in of_type("AWS::Serverless::Function"):
        assert f"/aws/lambda/${{{function}}}" in named, function
    for group in groups.values():
        assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    assert TEMPLATE["Parameters"]["LogRetentionDays"]["Default"] == 30


def test_the_http_api_throttles() -> None:
    [api] = of_type("AWS::Serverless::HttpApi").values()
    route = api["Properties"]["DefaultRouteSettings"]
    assert route["ThrottlingRateLimit"] == {"Ref": "ApiRateLimit"}
    assert route["ThrottlingBurstLimit"] == {"Ref": "ApiBurstLimit"}


def test_long_polls_run_on_their_own_capped_function() -> None:
    poll = RESOURCES["PollFunction"]["Properties"]
    assert poll["ReservedConcurrentExecutions"] == {"Ref": "PollConcurrency"}
    [event] = poll["Events"].values()
    assert event["Properties"]["Path"] == "/api/v1/llms/_provider-poll"
    # nothing else holds requests as long: the API function has no reserved cap to exhaust
    assert "ReservedConcurrentExecutions" not in RESOURCES["ApiFunction"]["Properties"]


def test_the_public_streaming_url_is_capped() -> None:
    """The Function URL has no authorizer and no API Gateway throttle in front of it."""
    stream = RESOURCES["StreamFunction"]["Properties"]
    assert stream["FunctionUrlConfig"]["AuthType"] == "NONE"
    assert stream["ReservedConcurrentExecutions"] == {"Ref": "StreamConcurrency"}
    assert TEMPLATE["Parameters"]["StreamConcurrency"]["MinValue"] == 1


def test_tables_with_keys_or_usage_are_protected() -> None:
    keys = RESOURCES["KeysTable"]
    assert keys["DeletionPolicy"] == "Retain" and keys["UpdateReplacePolicy"] == "Retain"
    pitr = keys["Properties"]["PointInTimeRecoverySpecification"]
    assert pitr["PointInTimeRecoveryEnabled"] is True


def test_the_alarms_exist_and_notify_when_asked() -> None:
    alarms = of_type("AWS::CloudWatch::Alarm")
    assert set(alarms) >= {
        "ApiServerErrorAlarm",
        "LambdaErrorAlarm",
        "LambdaThrottleAlarm",
        "DynamoDBThrottleAlarm",
        "SweepStoppedAlarm",
    }
    for alarm in alarms.values():
        actions = alarm["Properties"]["AlarmActions"]
        assert actions["Fn::If"][0] == "HasAlarmEmail"
    sweep = alarms["SweepStoppedAlarm"]["Properties"]
    assert sweep["Period"] * sweep["EvaluationPeriods"] == 300
    assert sweep["TreatMissingData"] == "breaching"
    functions = set(of_type("AWS::Serverless::Function"))
    watched = {
        m["MetricStat"]["Metric"]["Dimensions"][0]["Value"]["Ref"]
        for m in alarms["LambdaErrorAlarm"]["Properties"]["Metrics"]
        if "MetricStat" in m
    }
    assert watched == functions
    tables = set(of_type("AWS::DynamoDB::Table"))
    throttled = {
        m["MetricStat"]["Metric"]["Dimensions"][0]["Value"]["Ref"]
        for m in alarms["DynamoDBThrottleAlarm"]["Properties"]["Metrics"]
        if "MetricStat" in m
    }
    assert throttled == tables


def test_functions_log_json_and_write_emf() -> None:
    env = TEMPLATE["Globals"]["Function"]["Environment"]["Variables"]
    assert env["NATRELAY_LOG_FORMAT"] == "json" and env["NATRELAY_METRICS"] == "emf"


def test_timeouts_where_they_belong() -> None:
    """Only the API Gateway route keeps its 25 s, and its 504 names the URL that waits
    longer; the function URL waits most of its 15 minutes (the default, 600 s, is for
    long-lived relays)."""
    api = RESOURCES["ApiFunction"]["Properties"]["Environment"]["Variables"]
    assert api["NATRELAY_REQUEST_TIMEOUT_SECONDS"] == "25"
    assert api["NATRELAY_LONG_REQUEST_URL"] == {"Fn::GetAtt": "StreamFunctionUrl.FunctionUrl"}
    stream = RESOURCES["StreamFunction"]["Properties"]
    waits = stream["Environment"]["Variables"]["NATRELAY_REQUEST_TIMEOUT_SECONDS"]
    assert api["NATRELAY_LONG_REQUEST_TIMEOUT_SECONDS"] == waits == "840"
    assert int(waits) < stream["Timeout"]


def test_the_web_adapter_layer_fits_any_partition() -> None:
    [layer] = RESOURCES["StreamFunction"]["Properties"]["Layers"]
    condition, given, default = layer["Fn::If"]
    assert condition == "HasAdapterLayer" and given == {"Ref": "LambdaAdapterLayerArn"}
    assert default["Fn::Sub"].startswith("arn:${AWS::Partition}:lambda:${AWS::Region}:")
