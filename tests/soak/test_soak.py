"""A short soak in CI (scripts/soak runs the 10-minute one): nothing lost, nothing wrong,
nothing left pending or claimed, whatever the faults."""

from __future__ import annotations

import pytest

from tests.soak.run import run_soak

SECONDS = 45
SEED = 20240612  # fixed in CI, so that a failure can be replayed: scripts/soak --seed
# Every kind of fault, the relay's kill included: the relay is `natrelay dev`, whose
# publishers long-poll (the fast path, parking, records in batches). With the doorbell
# (`natrelay dev --doorbell`) a relay killed between a publisher's claim and its answer
# leaves that task claimed until the publisher's next safety poll (up to a minute),
# past this short run's settling time: scripts/soak covers that mode by hand.
FAULTS = ("kill-relay", "kill-publisher", "freeze-dynamodb", "freeze-publisher")


@pytest.mark.timeout(SECONDS + 180)
def test_short_soak(capsys: pytest.CaptureFixture[str]) -> None:
    # A fault every 8-12 s; the run lasts until each kind ran once, however slowly.
    report = run_soak(SECONDS, seed=SEED, faults=FAULTS, fault_every=(8, 12))
    with capsys.disabled():
        print("\n" + "\n".join(report.lines()))
        print("faults:\n" + "\n".join(f"  {fault}" for fault in report.faults))
    kinds = {fault.split()[1].rstrip(":") for fault in report.faults}
    assert kinds == set(FAULTS), report.faults
    assert report.sent > 50 and report.answered > report.sent // 2
    assert report.errors > 0  # at least the broken backends' clear errors
    assert report.lost == 0, report.examples
    assert report.wrong == 0, report.examples
    assert report.unsettled == 0, report.unsettled_tasks
    assert report.queued_twice_idempotent == 0, report.examples
