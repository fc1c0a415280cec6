"""Running a prepared rollback from the command line: what ``rollback`` and ``apply --on-failure
rollback`` both do (the route and what it loses said on stderr, the run under the progress observer,
exit 4 once an apply's failure is rolled back and verified)."""

from __future__ import annotations

from typing import TYPE_CHECKING, NoReturn

from upgrader import errors
from upgrader.cli import _errors, _render, _runs

if TYPE_CHECKING:
    from upgrader.cluster import session
    from upgrader.engine import ports
    from upgrader.state import records, store
    from upgrader.usecases import runs
    from upgrader.usecases.rollback import model as rollback_model
    from upgrader.usecases.rollback import service as rollback_mod


def run_prepared(
    opened: session.ClusterSession,
    state: store.Store,
    prepared: rollback_mod.Prepared,
    options: rollback_model.Options,
    *,
    lease: ports.Lease,
    log_format: _runs.LogFormat,
) -> records.RunRecord:
    from upgrader.usecases.rollback import service as rollback_mod

    title = f"{opened.name}: rollback to {prepared.snapshot.id} ({prepared.route.value})"
    with _runs.observer(log_format, title) as observe:
        return rollback_mod.execute(opened, state, prepared, options, lease=lease, observe=observe)


def lost(prepared: rollback_mod.Prepared) -> str:
    minutes = int(prepared.lost_seconds // 60)
    revisions = f"{prepared.lost_revisions} revisions" if prepared.lost_revisions is not None else "the revisions"
    return f"{revisions} written in the {minutes} min since {prepared.snapshot.created_at:%Y-%m-%d %H:%M:%SZ}"


def describe(prepared: rollback_mod.Prepared, output: _render.OutputFormat) -> None:
    """The route and what it loses, on stderr (stdout is kept for the result)."""
    from upgrader.usecases.rollback import model as rollback_model

    for passed in prepared.passed_over:
        _render.warn(f"passed over, fails verification: {passed}")
    if output is _render.OutputFormat.JSON:
        return
    _render.note(f"snapshot {prepared.snapshot.id} (v{prepared.version}), route: {prepared.route.value}")
    _render.note(f"  because {prepared.why}")
    if prepared.route is rollback_model.Route.FULL_RESTORE:
        _render.warn(f"a full restore: {lost(prepared)} are lost")
    if prepared.ends is not None:
        _render.note(f"  it ends run {prepared.ends.id} ({prepared.ends.status.value}), marked rolled-back")


def after_failed_apply(
    opened: session.ClusterSession,
    state: store.Store,
    halted: runs.RunStopped,
    *,
    lease: ports.Lease,
    log_format: _runs.LogFormat,
    output: _render.OutputFormat,
) -> NoReturn:
    """``apply --on-failure rollback``: back to the last snapshot the failed run took (else the default
    choice), without asking (the option is the consent), then exit 4 once verified. If the rollback
    cannot be prepared or stops, its own error and exit code are what the caller sees."""
    from upgrader.usecases import runs
    from upgrader.usecases.rollback import model as rollback_model
    from upgrader.usecases.rollback import service as rollback_mod

    taken = [s.detail["snapshot"] for s in halted.run.steps if s.kind == "snapshot" and s.detail.get("snapshot")]
    _render.warn(f"error: {halted.message}")
    _render.warn(f"--on-failure rollback: rolling back to {taken[-1] if taken else 'the last known-good snapshot'}")
    options = rollback_model.Options(insecure=opened.insecure)
    try:
        prepared = rollback_mod.prepare(opened, state, taken[-1] if taken else None, options)
        describe(prepared, output)
        done = run_prepared(opened, state, prepared, options, lease=lease, log_format=log_format)
    except runs.RunStopped as stopped:
        _runs.stopped(stopped, output, log_format)
    message = (
        f"run {halted.run.id} failed ({halted.message}); rolled back to snapshot {prepared.snapshot.id} by "
        f"{prepared.route.value} in run {done.id}, verified"
    )
    if output is _render.OutputFormat.JSON and log_format is _runs.LogFormat.TEXT:
        _render.emit_json(
            {"ok": False, "rolled_back": True, "run": halted.run.id, "rollback": {"run": done.id, **prepared.summary()}}
        )
    _errors.exit_with(errors.ExitCode.ROLLED_BACK, message)
