"""Rows and agents as YAML documents (what `natrelay llm apply -f`, `natrelay agent
apply -f` and the console's rows form take): read them, check each against the relay's
document model, and say where a problem is (`SOURCE: document N (name): field:
reason`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ValidationError

from natrelay.wire.rows import MAX_APPLY_DOCUMENTS, LlmDocument


class DocumentError(ValueError):
    """YAML documents that cannot be applied; the message names where and why."""


def _where(source: str, number: int, doc: Any) -> str:
    name = doc.get("name") if isinstance(doc, dict) else None
    return f"{source}: document {number}" + (f" ({name})" if isinstance(name, str) else "")


def read_documents(
    text: str,
    source: str,
    model: type[BaseModel] = LlmDocument,
    prepare: Callable[[dict[str, Any], str], dict[str, Any]] | None = None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """The YAML documents of a text (empty ones skipped), each checked against the
    document `model` (rows', or agents') after `prepare(doc, where)` if given, and where
    each is (`SOURCE: document N (name)`). DocumentError names the document and the
    field at fault."""
    import yaml  # noqa: PLC0415 - only where rows are applied, not on a cold start

    try:
        loaded = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = ""
        if mark is not None:
            before = text.splitlines()[: mark.line]
            starts = text.lstrip().startswith("---")  # then the first `---` opens document 1
            number = max(1, sum(1 for line in before if line.startswith("---")) + (not starts))
            at = f": document {number}, line {mark.line + 1}"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise DocumentError(f"{source}{at}: not valid YAML: {problem}") from exc
    docs: list[dict[str, Any]] = []
    places: list[str] = []
    for number, read in enumerate(loaded, start=1):
        if read is None:
            continue
        where = _where(source, number, read)
        if not isinstance(read, dict):
            raise DocumentError(f"{where}: must be a mapping of fields (name: …)")
        doc = prepare(read, where) if prepare is not None else read
        try:
            model.model_validate(doc)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"])
            message = first["msg"].removeprefix("Value error, ")
            raise DocumentError(f"{where}: {field + ': ' if field else ''}{message}") from None
        docs.append(doc)
        places.append(where)
    if not docs:
        raise DocumentError(f"{source}: no documents to apply")
    if len(docs) > MAX_APPLY_DOCUMENTS:
        raise DocumentError(
            f"{source}: {len(docs)} documents; apply at most {MAX_APPLY_DOCUMENTS} at once"
        )
    return docs, places


def placed(param: str | None, message: str, places: list[str]) -> str | None:
    """The relay's refusal of a document (`param` documents[i].field) told where that
    document is (`SOURCE: document N (name): field: reason`); None if it names none."""
    if not (param or "").startswith("documents[") or "]" not in (param or ""):
        return None
    index, _, field = (param or "").removeprefix("documents[").partition("]")
    if not index.isdigit() or int(index) >= len(places):
        return None
    # the relay names the document by index: say where it is instead
    reason = message.split("): ", 1)[1] if "): " in message else message
    field = field.removeprefix(".")
    return f"{places[int(index)]}: {field + ': ' if field else ''}{reason}"
