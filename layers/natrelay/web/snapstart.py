"""Lambda SnapStart: what each instance restored from one snapshot must have of its own.

With SnapStart on (the template's `SnapStart` parameter) Lambda runs the handler's INIT
once, when it publishes a version, and starts every new instance from a snapshot of it.
Everything built at INIT is then shared by every instance restored from that snapshot:
so after each restore `random` is seeded afresh (botocore's retry jitter and the wake's
use it; ids and keys come from `secrets`, which reads the OS at every call), and the
relay is rebuilt on new AWS clients — connections opened before the snapshot are not
the restored instance's own. The settings (and the tokens read from the relay's secret
at INIT) are kept.

The hooks come from `snapshot_restore_py`, which the Lambda runtime provides: it must not
be shipped in the layer (a copy there would shadow the runtime's, and hooks registered
with it would never run).
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable

from starlette.applications import Starlette

from natrelay.service import Relay
from natrelay.service.assembly import Assembly

# AWS_LAMBDA_INITIALIZATION_TYPE during an INIT whose result is snapshotted.
SNAP_START = "snap-start"


def renewed(relay: Relay) -> Relay:
    """The same relay on new AWS clients, with nothing cached: built again by the
    composition root from the same settings (the tokens read at INIT with them), clock
    and metrics."""
    return Assembly(relay.settings, clock=relay.clock, metrics=relay.metrics).relay


def renew(app: Starlette) -> None:
    """Give `app` a renewed relay and `random` a fresh seed (after a restore)."""
    random.seed()
    app.state.relay = renewed(app.state.relay)


def on_restore(app: Starlette, register: Callable[..., object] | None = None) -> bool:
    """In a SnapStart INIT, have `renew(app)` run after every restore; False (nothing
    registered) in any other INIT. `register`: the runtime's `register_after_restore`."""
    if os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE") != SNAP_START:
        return False
    if register is None:
        from snapshot_restore_py import (  # noqa: PLC0415 - in SnapStart runtimes only
            register_after_restore,
        )

        register = register_after_restore
    register(renew, app)
    return True
