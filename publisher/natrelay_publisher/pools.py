"""What a publisher says when a name it publishes is served by others too.

Every live publisher of the same key that publishes a name serves it with us, as one pool:
requests go to whichever member is free. That is what two boxes with one key are for —
and a surprise when it happens by accident, as with the simple mode's shared publish
token, which every publisher of a team may hold.
"""

from __future__ import annotations

from natrelay.wire import SessionResponse, fingerprint

STORED_KEY_PREFIX = "nrk_"


def pool_news(answer: SessionResponse, token: str, known: dict[str, int]) -> list[str]:
    """A line for each name whose other live members changed in number since `known`
    (updated): joined, or left alone again."""
    me = fingerprint(answer.provider_session_id)
    lines = []
    for row in answer.llms:
        if row.members is None:
            continue  # a relay that does not say
        others = sum(1 for m in row.members if m.member != me)
        if others == known.get(row.name, 0):
            continue
        known[row.name] = others
        if not others:
            lines.append(f"{row.name}: no other publisher serves it now")
            continue
        line = (
            f"{row.name}: joined a pool with {others} other live publisher(s) of this key; "
            "requests for it go to whichever is free"
        )
        if not token.startswith(STORED_KEY_PREFIX):
            line += (
                " (this is the shared publish token: everyone who publishes "
                f"{row.name} with it joins; give each box its own key, or another name, "
                "to keep them apart)"
            )
        lines.append(line)
    return lines
