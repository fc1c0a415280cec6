"""Hand-over on a shared PostgreSQL database: an apply started on one host and killed there is resumed
from another host, with another identity, once the first one's lease has expired by the database's
clock, and reaches the same final state."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests import pgserver
from tests.e2e.conftest import Labs, wait_for
from tests.e2e.test_apply import Apply, invoke, kubelets, why
from upgrader.state import records, store

pytestmark = pytest.mark.slow

TTL = 8  # seconds: the lease's life without renewal (UPGRADER_LOCK_TTL)


def test_a_run_killed_on_one_host_is_resumed_from_another_after_its_lease_expires(
    labs: Labs, pg_server: pgserver.Server, private_state_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lab = labs.up("handover", version="1.31.13", control_planes=1, workers=1)
    cluster_yaml = str(lab.dir / "cluster.yaml")
    monkeypatch.setenv("UPGRADER_LOCK_TTL", str(TTL))
    with pg_server.database() as url:
        db = ("--db", url)
        assert invoke("db", "upgrade", *db).exit_code == 0
        plan = json.loads(invoke("plan", "-c", cluster_yaml, "--to", "1.32", "--save", *db, "-o", "json").stdout)
        env = {**os.environ, "XDG_DATA_HOME": str(private_state_home.parent), "UPGRADER_HOST": "runner-a"}
        first = Apply([plan["id"], "-c", cluster_yaml, *db, "--yes"], env)
        try:
            wait_for(lambda: first.running("upgrade-control-plane.yml"), timeout=120, what="the control-plane playbook")
            first.kill()
        finally:
            first.stop()
        killed_at = time.monotonic()
        with store.Store.open(url) as state:
            run = state.runs(lab.name, limit=1)[0]
            (held,) = state.locks(lab.name)
        assert run.host == "runner-a" and run.status is records.RunStatus.RUNNING
        assert held.host == "runner-a"

        # Another runner, at once: the dead run's lease is another host's, so it waits for it to expire.
        monkeypatch.setenv("UPGRADER_HOST", "runner-b")
        # The lease expires TTL after its last renewal, which a loaded machine may have made late.
        lease_left = (held.expires_at - datetime.now(UTC)).total_seconds()
        early = invoke("apply", "--resume", run.id, "-c", cluster_yaml, *db, "-o", "json")
        if early.exit_code == 3:
            assert "runner-a" in early.stderr, early.output
            wait_for(lambda: time.monotonic() - killed_at > TTL + 1, timeout=TTL + 5, what="the lease to expire")
            resumed = invoke("apply", "--resume", run.id, "-c", cluster_yaml, *db, "-o", "json")
        else:  # the lease had (nearly) run out before the early call took the lock, so it resumed the run
            assert lease_left < 1, f"took over a lease with {lease_left:.1f}s left: {early.output}"
            resumed = early
        assert resumed.exit_code == 0, why(resumed)
        assert json.loads(resumed.stdout)["status"] == "succeeded"
        assert set(kubelets(lab).values()) == {"v1.32.9"}
        with store.Store.open(url) as state:
            finished = state.run(run.id)
            took_over = [e for e in state.events(cluster=lab.name, limit=500) if e.kind == "lock-taken-over"]
        assert finished.host == "runner-b" and finished.status is records.RunStatus.SUCCEEDED
        assert all(s.status is records.StepStatus.SUCCEEDED for s in finished.steps)
        assert max(s.attempts for s in finished.steps) >= 2  # the killed step ran again
        assert took_over and "runner-a" in took_over[0].message, [e.message for e in took_over]
