"""The shape of the code, kept by tests: layers, import cycles, module sizes.

Imports are read from the AST (no module is executed). Imports under
`if TYPE_CHECKING:` are left out: they never run.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {
    "natrelay": ROOT / "layers" / "natrelay",
    "natrelay_publisher": ROOT / "publisher" / "natrelay_publisher",
    "natrelay_cli": ROOT / "publisher" / "natrelay_cli",
    "natrelay_infra": ROOT / "infra" / "natrelay_infra",
}
# What the publisher's wheel must install without: AWS and the relay's web stack.
SERVER_LIBRARIES = ("boto3", "botocore", "moto", "starlette", "mangum", "uvicorn")
MAX_MODULE_LINES = 400
# What DynamoDB expressions look like: functions, placeholders, expression parameters.
DYNAMO_MARKERS = (
    "attribute_not_exists(",
    "attribute_exists(",
    "begins_with(",
    "if_not_exists(",
    "ConditionExpression",
    "UpdateExpression",
    "KeyConditionExpression",
    "ExpressionAttribute",
)


def _modules(package: str) -> dict[str, Path]:
    root = PACKAGES[package]
    found: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


ALL = {name: path for package in PACKAGES for name, path in _modules(package).items()}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST, *, typing_too: bool = False) -> Iterator[ast.AST]:
    """Every node, except what sits under `if TYPE_CHECKING:` (unless `typing_too`)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if not typing_too and isinstance(child, ast.If) and _is_type_checking(child):
                stack.extend(child.orelse)
                continue
            stack.append(child)


def _imports(module: str, path: Path, *, typing_too: bool = False) -> set[str]:
    """The project modules `module` imports at run time (and for the type checker, with
    `typing_too`)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in _runtime_nodes(tree, typing_too=typing_too):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.add(sub if sub in ALL else base)
    return {name for name in out if name in ALL and name != module}


GRAPH = {name: _imports(name, path) for name, path in ALL.items()}
# The same with the imports under `if TYPE_CHECKING:`: a circle hidden there is a circle.
TYPED_GRAPH = {name: _imports(name, path, typing_too=True) for name, path in ALL.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the list of modules on it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_graph_is_read() -> None:
    # a guard for the tests below: an empty or broken graph would prove nothing
    assert "natrelay.service.claims" in GRAPH["natrelay.service"]
    assert "natrelay.store" in GRAPH["natrelay.service.claims"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_no_import_cycle(package: str) -> None:
    graph = {m: deps for m, deps in GRAPH.items() if m.split(".")[0] == package}
    assert _cycle(graph) is None


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_no_import_cycle_hidden_under_type_checking(package: str) -> None:
    """An import the type checker alone sees still ties the modules together: counted."""
    graph = {m: deps for m, deps in TYPED_GRAPH.items() if m.split(".")[0] == package}
    assert _cycle(graph) is None


def test_the_publisher_and_its_cli_install_without_server_libraries() -> None:
    offenders: list[str] = []
    for module, path in ALL.items():
        if module.split(".")[0] not in ("natrelay_publisher", "natrelay_cli"):
            continue
        for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            offenders += [f"{module}: {n}" for n in names if n.split(".")[0] in SERVER_LIBRARIES]
    assert offenders == []


def test_the_cli_reaches_the_relay_through_the_wire_models_only() -> None:
    for module, deps in GRAPH.items():
        if module.startswith("natrelay_cli"):
            relay = {d for d in deps if d.split(".")[0] == "natrelay"}
            assert all(d == "natrelay.wire" or d.startswith("natrelay.wire.") for d in relay), (
                module
            )


def test_the_deployment_mode_is_read_in_one_place() -> None:
    """`settings.mode` (lambda | server) is read by the composition root alone; everything
    else is handed what the mode decided."""
    readers = set()
    for module, path in ALL.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr == "mode":
                readers.add(module)
    assert readers - {"natrelay.settings"} == {"natrelay.service.assembly"}


def test_the_publisher_needs_only_the_wire_models_of_the_relay() -> None:
    for module, deps in GRAPH.items():
        if module.startswith("natrelay_publisher"):
            relay = {d for d in deps if d.split(".")[0] == "natrelay"}
            assert all(d == "natrelay.wire" or d.startswith("natrelay.wire.") for d in relay), (
                module
            )


def test_layers_depend_downwards_only() -> None:
    """wire <- store <- service <- web; nothing below imports what sits above it."""
    order = ["natrelay.wire", "natrelay.store", "natrelay.service", "natrelay.web"]

    def layer(module: str) -> int | None:
        for i, prefix in enumerate(order):
            if module == prefix or module.startswith(prefix + "."):
                return i
        return None

    for module, deps in GRAPH.items():
        mine = layer(module)
        if mine is None:
            continue
        for dep in deps:
            theirs = layer(dep)
            assert theirs is None or theirs <= mine, f"{module} imports {dep}"


@pytest.mark.parametrize("module", sorted(ALL))
def test_modules_stay_small(module: str) -> None:
    lines = len(ALL[module].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_MODULE_LINES, f"{module} has {lines} lines"


def test_only_the_store_knows_dynamodb() -> None:
    offenders: list[str] = []
    for module, path in ALL.items():
        # infra sets the tables up (and is no part of the relay), the store alone reads them
        if module.startswith("natrelay.store") or not module.startswith("natrelay."):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in _runtime_nodes(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                names.append(getattr(node, "module", None) or "")
                if any(n.split(".")[0] in ("botocore", "boto3") for n in names):
                    offenders.append(f"{module}: imports {names}")
            elif (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and any(marker in node.value for marker in DYNAMO_MARKERS)
            ):
                offenders.append(f"{module}: {node.value!r}")
    assert offenders == []
