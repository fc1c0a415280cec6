"""The cluster lock between real processes: exclusion, renewal, expiry after a holder dies, races."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from upgrader import cli, errors
from upgrader.state import db, lease, schema

HOLDER = Path(__file__).with_name("lock_holder.py")
FAKETIME = shutil.which("faketime")


class Holder:
    """A lock_holder.py child process, always stopped by pid at the end of the test."""

    def __init__(
        self, db_url: str, cluster: str, ttl: float, *, host: str | None = None, skew: str | None = None
    ) -> None:
        """``host``: the identity it claims (UPGRADER_HOST); ``skew``: its clock moved by libfaketime
        (``-5m``), the whole process's, as on a host whose clock is wrong."""
        prefix = [str(FAKETIME), "-f", skew] if skew else []
        self.process = subprocess.Popen(
            [*prefix, sys.executable, str(HOLDER), db_url, cluster, str(ttl)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, **({"UPGRADER_HOST": host} if host else {})},
        )

    def first_line(self) -> dict[str, object]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, "holder process exited without reporting"
        return dict(json.loads(line))

    def release(self) -> dict[str, object]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("release\n")
        self.process.stdin.flush()
        report = dict(json.loads(self.process.stdout.readline()))
        assert self.process.wait(timeout=30) == 0
        return report

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


def _holders(db_url: str) -> Iterator[list[Holder]]:
    schema.upgrade_url(db_url)
    started: list[Holder] = []
    yield started
    for holder in started:
        holder.stop()


@pytest.fixture
def holders(db_url: str) -> Iterator[list[Holder]]:
    yield from _holders(db_url)


@pytest.fixture
def pg_holders(pg_url: str) -> Iterator[list[Holder]]:
    yield from _holders(pg_url)


@pytest.fixture
def engine(db_url: str):  # type: ignore[no-untyped-def]
    opened = db.open_engine(db_url)
    yield opened
    opened.dispose()


def start(
    holders: list[Holder],
    db_url: str,
    ttl: float = 30.0,
    cluster: str = "prod-eu1",
    *,
    host: str | None = None,
    skew: str | None = None,
) -> Holder:
    holder = Holder(db_url, cluster, ttl, host=host, skew=skew)
    holders.append(holder)
    return holder


def test_second_process_is_refused_while_the_first_holds_the_lock(holders: list[Holder], db_url: str, engine) -> None:  # type: ignore[no-untyped-def]
    first = start(holders, db_url)
    report = first.first_line()
    assert report["acquired"] is True
    with pytest.raises(errors.LockHeld, match=rf"locked by `test-holder` \(pid {report['pid']} on ") as caught:
        lease.acquire(engine, cluster="prod-eu1", command="upgrader apply")
    assert caught.value.exit_code == errors.ExitCode.REFUSED
    # Another cluster is not affected.
    with lease.acquire(engine, cluster="staging", command="upgrader apply"):
        pass
    assert first.release() == {"lost": False}
    with lease.acquire(engine, cluster="prod-eu1", command="upgrader apply") as mine:
        assert mine.took_over is None


def test_two_processes_racing_cannot_both_win(holders: list[Holder], db_url: str) -> None:
    contenders = [start(holders, db_url) for _ in range(4)]
    reports = [c.first_line() for c in contenders]
    assert sum(1 for r in reports if r["acquired"]) == 1
    assert all("locked by `test-holder`" in str(r["error"]) for r in reports if not r["acquired"])


def test_a_live_holder_renews_past_its_ttl(holders: list[Holder], db_url: str, engine) -> None:  # type: ignore[no-untyped-def]
    first = start(holders, db_url, ttl=2.0)
    assert first.first_line()["acquired"] is True
    time.sleep(5.0)  # two and a half TTLs: only renewal keeps it
    with pytest.raises(errors.LockHeld):
        lease.acquire(engine, cluster="prod-eu1", command="upgrader apply")
    assert first.release() == {"lost": False}


def test_a_dead_holders_lease_on_another_host_is_taken_over_after_it_expires(
    holders: list[Holder], db_url: str, engine
) -> None:  # type: ignore[no-untyped-def]
    first = start(holders, db_url, ttl=1.5)
    pid = first.first_line()["pid"]
    os.kill(first.process.pid, signal.SIGKILL)
    first.process.wait(timeout=30)
    with engine.begin() as connection:  # as if it had run on another machine sharing the database
        connection.execute(text("UPDATE locks SET host = 'bastion-2'"))
    with pytest.raises(errors.LockHeld):  # not expired yet: a holder we cannot see still blocks until then
        lease.acquire(engine, cluster="prod-eu1", command="upgrader apply")
    deadline = time.monotonic() + 10
    while True:
        try:
            taken = lease.acquire(engine, cluster="prod-eu1", command="upgrader apply")
            break
        except errors.LockHeld:
            assert time.monotonic() < deadline, "the dead holder's lease never expired"
            time.sleep(0.2)
    with taken:
        assert taken.took_over is not None and taken.took_over.pid == pid


def test_a_dead_holders_lease_on_this_host_is_taken_over_at_once(holders: list[Holder], db_url: str, engine) -> None:  # type: ignore[no-untyped-def]
    first = start(holders, db_url, ttl=60)
    pid = first.first_line()["pid"]
    os.kill(first.process.pid, signal.SIGKILL)  # a SIGKILLed apply: its lease would block for a minute
    first.process.wait(timeout=30)
    with lease.acquire(engine, cluster="prod-eu1", command="upgrader apply --resume") as taken:
        assert taken.took_over is not None and taken.took_over.pid == pid


def test_breaking_a_lock_makes_its_holder_notice(holders: list[Holder], db_url: str, engine) -> None:  # type: ignore[no-untyped-def]
    first = start(holders, db_url, ttl=0.9)
    assert first.first_line()["acquired"] is True
    with pytest.raises(errors.Refused, match=r"held by `test-holder` \(pid \d+ on .*\), which is running"):
        lease.break_lease(engine, "prod-eu1")  # a live holder keeps its lock unless forced
    broken = lease.break_lease(engine, "prod-eu1", force=True)
    assert broken is not None and broken.command == "test-holder"
    time.sleep(3.0)  # renewals tick every 0.3 s: several have run, even on a loaded machine
    assert first.release() == {"lost": True}


def test_lost_lease_raises_needs_human(engine) -> None:  # type: ignore[no-untyped-def]
    held = lease.acquire(engine, cluster="c", command="x", ttl=timedelta(seconds=30))
    lease.break_lease(engine, "c", force=True)
    with pytest.raises(errors.LockLost) as caught:
        held.renew()
    assert caught.value.exit_code == errors.ExitCode.NEEDS_HUMAN
    held.release()  # releasing a lost lease does not remove someone else's


def test_cli_lock_status_and_break(holders: list[Holder], db_url: str) -> None:
    first = start(holders, db_url)
    pid = first.first_line()["pid"]
    runner = CliRunner()
    shown = runner.invoke(cli.app, ["lock", "status", "--db", db_url, "--output", "json"])
    assert shown.exit_code == 0, shown.output
    locks = json.loads(shown.stdout)["locks"]
    assert [(lk["cluster"], lk["pid"], lk["expired"]) for lk in locks] == [("prod-eu1", pid, False)]
    table = runner.invoke(cli.app, ["lock", "status", "--db", db_url])
    assert "prod-eu1" in table.stdout and str(pid) in table.stdout and "held" in table.stdout
    refused = runner.invoke(cli.app, ["lock", "break", "--name", "prod-eu1", "--db", db_url])
    assert refused.exit_code == 2
    assert "refusing without --yes, as stdin is not a terminal" in refused.stderr
    live = runner.invoke(cli.app, ["lock", "break", "--name", "prod-eu1", "--db", db_url, "--yes"])
    assert live.exit_code == 3
    assert f"held by `test-holder` (pid {pid} on " in live.stderr and "which is running" in live.stderr
    done = runner.invoke(cli.app, ["lock", "break", "--name", "prod-eu1", "--db", db_url, "--yes", "--force"])
    assert done.exit_code == 0, done.output
    assert "lock on prod-eu1 broken" in done.stdout
    again = runner.invoke(cli.app, ["lock", "status", "--db", db_url, "--name", "prod-eu1"])
    assert "cluster prod-eu1 is not locked" in again.stdout


def _run_on_a_terminal(args: list[str], answer: bytes) -> tuple[int, str]:
    """Runs the real upgrader CLI with a pseudo-terminal as stdin and types ``answer`` at its prompt."""
    import pty

    leader, follower = pty.openpty()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "upgrader", *args],
            stdin=follower,
            stdout=follower,
            stderr=follower,
            close_fds=True,
        )
        os.close(follower)
        output = b""
        try:
            while b"[y/N]" not in output:
                output += os.read(leader, 1024)
            os.write(leader, answer)
            while True:
                try:
                    chunk = os.read(leader, 1024)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
        finally:
            code = process.wait(timeout=60)
    finally:
        os.close(leader)
    return code, output.decode(errors="replace")


def test_lock_break_asks_on_a_terminal(holders: list[Holder], db_url: str) -> None:
    first = start(holders, db_url)
    pid = first.first_line()["pid"]
    code, output = _run_on_a_terminal(["lock", "break", "--name", "prod-eu1", "--db", db_url], b"n\n")
    assert code == 3, output
    assert f"held by `test-holder` (pid {pid} on" in output and "not confirmed; nothing was changed" in output
    code, output = _run_on_a_terminal(["lock", "break", "--name", "prod-eu1", "--db", db_url, "--force"], b"y\n")
    assert code == 0, output
    assert "lock on prod-eu1 broken" in output


@pytest.mark.skipif(FAKETIME is None, reason="faketime is not installed (apt-get install faketime): no clock-skew test")
@pytest.mark.parametrize(("first", "second"), [("-5m", "+5m"), ("+5m", "-5m")])
def test_hosts_whose_clocks_are_minutes_apart_agree_on_when_a_lease_expires(
    pg_holders: list[Holder], pg_url: str, first: str, second: str
) -> None:
    """On PostgreSQL, the database a team shares (a SQLite file is a library in each process, on one
    host: its clock is that host's)."""
    holders, db_url = pg_holders, pg_url
    # Long enough that a second holder, started while the machine is busy (a 2 s lease expired before one
    # started under a load of 38), still meets the first one's lease; minutes shorter than the skew.
    ttl = 6.0
    holder = start(holders, db_url, ttl=ttl, host="runner-a", skew=first)
    assert holder.first_line()["acquired"] is True
    # By its own clock a slow holder's lease expired minutes ago, and a fast one's lasts minutes more:
    # only the database's clock tells both hosts the truth.
    refused = start(holders, db_url, ttl=ttl, host="runner-b", skew=second).first_line()
    assert refused["acquired"] is False and "runner-a" in str(refused["error"]), refused
    os.kill(holder.process.pid, signal.SIGKILL)
    holder.process.wait(timeout=30)
    deadline = time.monotonic() + ttl + 15  # the TTL and a little, never minutes
    while True:
        taker = start(holders, db_url, ttl=ttl, host="runner-b", skew=second)
        report = taker.first_line()
        if report["acquired"]:
            break
        assert time.monotonic() < deadline, f"the dead holder's lease did not expire by the database's clock: {report}"
        time.sleep(0.5)
    assert taker.release() == {"lost": False}


def test_a_dead_holders_lock_is_broken_without_force_and_a_reused_pid_is_not_its_holder(
    holders: list[Holder],
    db_url: str,
    engine,  # type: ignore[no-untyped-def]
) -> None:
    first = start(holders, db_url, ttl=60)
    first.first_line()
    os.kill(first.process.pid, signal.SIGKILL)
    first.process.wait(timeout=30)
    broken = lease.break_lease(engine, "prod-eu1")  # gone on this host: no --force needed
    assert broken is not None and broken.process is not None


def test_a_holder_is_judged_by_boot_namespace_and_start_time_not_by_pid_alone() -> None:
    from upgrader.support import pids

    me = pids.identity()
    boot, namespace, start = me.split(":")
    assert pids.judge(os.getpid(), me) is pids.Liveness.ALIVE
    # the same pid, started at another time: a reused pid, not the holder
    assert pids.judge(os.getpid(), f"{boot}:{namespace}:{int(start) + 1}") is pids.Liveness.GONE
    # another pid namespace (a container) or another boot (a reboot, or another machine under the same
    # UPGRADER_HOST): a pid here says nothing about it, so only the lease's expiry can free the lock
    assert pids.judge(os.getpid(), f"{boot}:4026531999:{start}") is pids.Liveness.UNKNOWN
    assert pids.judge(999_999_999, f"{boot}:4026531999:{start}") is pids.Liveness.UNKNOWN
    assert pids.judge(os.getpid(), f"00000000-0000-0000-0000-000000000000:{namespace}:{start}") is (
        pids.Liveness.UNKNOWN
    )


def test_a_lease_from_another_pid_namespace_is_neither_taken_over_nor_broken_while_fresh(engine) -> None:  # type: ignore[no-untyped-def]
    """Two processes with the same UPGRADER_HOST in different PID namespaces both ran: the holder's pid
    did not exist in the other's namespace, so it was judged dead."""
    from sqlalchemy import update

    from upgrader.state import orm

    held = lease.acquire(engine, cluster="c", command="upgrader apply", ttl=timedelta(seconds=60))
    boot, _, start = held.info.process.split(":")  # type: ignore[union-attr]
    with engine.begin() as connection:  # as a holder in another namespace, with a pid that is free here
        connection.execute(
            update(orm.Lock).where(orm.Lock.cluster == "c").values(pid=999_999_999, process=f"{boot}:1:{start}")
        )
    with pytest.raises(errors.LockHeld):
        lease.acquire(engine, cluster="c", command="upgrader rollback")
    with pytest.raises(errors.Refused, match=r"whose lease is fresh .* cannot be checked from here"):
        lease.break_lease(engine, "c")
