"""What an unknown model name probably meant, among the names the caller may use: the
name a backend id is published under (`gemma3-270m` is `gemma`), another case, a typo,
a part of a name. Nothing the caller may not see is ever named."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from natrelay.store import LlmRecord

MAX_SUGGESTIONS = 3
_MIN_PART = 3


def suggestions(name: str, rows: Iterable[LlmRecord]) -> list[str]:
    """Up to three names of `rows` that `name` may have meant (a match of an alias names
    its row)."""
    rows = list(rows)
    wanted = name.casefold()
    found: list[str] = [r.name for r in rows if r.model.casefold() == wanted]
    names = {n.casefold(): r.name for r in rows for n in (r.name, *r.aliases)}
    if wanted in names:
        found.append(names[wanted])
    found += [names[n] for n in difflib.get_close_matches(wanted, names, n=3, cutoff=0.6)]
    if len(wanted) >= _MIN_PART:
        found += [
            row
            for key, row in names.items()
            if wanted in key or (len(key) >= _MIN_PART and key in wanted)
        ]
    return list(dict.fromkeys(found))[:MAX_SUGGESTIONS]


def unknown_model(name: str, rows: Iterable[LlmRecord]) -> str:
    """The message of a 404 for the model `name`."""
    rows = list(rows)
    message = f"the model {name!r} does not exist"
    meant = suggestions(name, rows)
    published = [r.name for r in rows if r.model.casefold() == name.casefold()]
    if published:
        message += (
            f"; {name!r} is what its backend calls {published[0]!r}: ask for {published[0]!r}"
        )
    elif meant:
        message += "; did you mean " + " or ".join(repr(m) for m in meant) + "?"
    return message + " (GET /v1/models lists the models this key may use)"
