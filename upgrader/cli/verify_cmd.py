"""``upgrader verify``: the apply gates on their own, or the cluster against a snapshot (read-only)."""

from typing import Annotated

import typer

from upgrader import errors
from upgrader.cli import _errors, _options, _render

app = _options.group("Check the cluster: the apply gates, or a match with a snapshot (read-only).")


@app.callback(invoke_without_command=True)
@_errors.handle
def verify(
    cluster: _options.ClusterOption,
    against: Annotated[
        str | None, typer.Option("--against", help="A snapshot id: versions, manifests and etcd must match it.")
    ] = None,
    expect: Annotated[
        str | None, typer.Option("--expect", help="Every apiserver and kubelet at this version (1.31.13).")
    ] = None,
    insecure: _options.InsecureOption = False,
    db: _options.DbOption = None,
    output: _options.OutputOption = _render.OutputFormat.TABLE,
) -> None:
    """Exit 0 only when every check holds; 1 when one does not (each names what differs).

    Exit codes: 0 verified, 1 a check failed, 2 bad input, 3 the snapshot is no reference (damaged, or
    another cluster's).
    """
    from upgrader.cluster import session
    from upgrader.core import config
    from upgrader.core.versions import Version
    from upgrader.state import store
    from upgrader.usecases import verification

    if against and expect:
        raise errors.UsageError("give --against SNAPSHOT or --expect VERSION, not both")
    version = Version.parse(expect, what="--expect") if expect else None
    cfg = config.load(cluster)
    with session.ClusterSession.open(cfg, insecure=insecure) as opened:
        if against:
            with store.Store.open(db) as state:
                verdict = verification.against(opened, state, against)
        elif version is not None:
            verdict = verification.expect(opened, version)
        else:
            verdict = verification.current(opened)
    if output is _render.OutputFormat.JSON:
        _render.emit_json(verdict.as_dict())
    else:
        rows = [(c.name, "ok" if c.ok else "FAILED", c.detail) for c in verdict.checks]
        _render.echo(_render.table(("CHECK", "RESULT", "DETAIL"), rows))
    if not verdict.ok:
        failed = verdict.failures
        _errors.exit_with(
            errors.ExitCode.FAILURE,
            f"{cfg.name} does not match {verdict.reference}: {failed[0].detail}"
            + (f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""),
        )
    _render.note(f"{cfg.name} matches {verdict.reference}")
