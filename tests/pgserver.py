"""A real PostgreSQL server for the state tests: Debian's binaries (`initdb`, `postgres`) in a temporary
directory, on a Unix socket only, started and stopped by pid. `initdb` refuses to run as root (CI runs
as root), so the server runs as an unprivileged user then. Each test gets a database of its own."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SUPERUSER = "upgrader"
PASSWORD_ROLE = "upgrader_pw"
PASSWORD = "pw-never-shown-4711"


def binaries() -> Path | None:
    """The directory of initdb and postgres: on PATH, else Debian's newest /usr/lib/postgresql/N/bin."""
    found = shutil.which("initdb")
    if found and (Path(found).resolve().parent / "postgres").exists():
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name))
    return versions[-1].parent if versions else None


def _unprivileged() -> tuple[int, int] | None:
    """The uid and gid to run the server as when this process is root (initdb refuses root)."""
    if os.geteuid() != 0:
        return None
    entry = pwd.getpwnam("nobody")
    return entry.pw_uid, entry.pw_gid


@dataclass(frozen=True)
class Server:
    socket_dir: Path
    pid: int

    def url(self, database: str, *, user: str = SUPERUSER) -> str:
        return f"postgresql+psycopg://{user}@/{database}?host={self.socket_dir}"

    def sql(self, statement: str) -> None:
        import psycopg

        with psycopg.connect(host=str(self.socket_dir), user=SUPERUSER, dbname="postgres", autocommit=True) as conn:
            conn.execute(statement)  # type: ignore[arg-type]

    @contextmanager
    def database(self) -> Iterator[str]:
        """A new, empty database for one test; dropped afterwards."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        self.sql(f'CREATE DATABASE "{name}"')
        try:
            yield self.url(name)
        finally:
            self.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def version() -> str:
    bin_dir = binaries()
    if bin_dir is None:
        return "?"
    return subprocess.run(
        [bin_dir / "postgres", "--version"], capture_output=True, text=True, check=False
    ).stdout.split()[2]


@contextmanager
def running(*, fsync: bool = False) -> Iterator[Server]:
    """The server, by pid. Tests run it with fsync off (nothing they write must survive a crash); the
    benchmark with fsync on, as a real one."""
    bin_dir = binaries()
    if bin_dir is None:
        raise FileNotFoundError("no PostgreSQL server binaries (initdb, postgres): apt-get install postgresql")
    owner = _unprivileged()
    base = Path(tempfile.mkdtemp(prefix="upgrader-pg-"))  # not under pytest's root-only 0700 directories
    data, sockets, log = base / "data", base / "run", base / "server.log"
    sockets.mkdir()
    if owner:
        for path in (base, sockets):
            os.chown(path, *owner)
    as_owner = {"user": owner[0], "group": owner[1]} if owner else {}
    process: subprocess.Popen[bytes] | None = None
    try:
        subprocess.run(
            [bin_dir / "initdb", "-D", data, "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--no-sync"],
            check=True,
            capture_output=True,
            cwd=base,
            **as_owner,  # type: ignore[arg-type]
        )
        # One role must give a password (over the socket, scram): the tests of PGPASSFILE and of a
        # password kept out of every message use it; every other role is trusted.
        hba = data / "pg_hba.conf"
        hba.write_text(f"local all {PASSWORD_ROLE} scram-sha-256\n" + hba.read_text())
        with log.open("wb") as out:
            process = subprocess.Popen(
                [
                    bin_dir / "postgres",
                    *("-D", data, "-k", sockets, "-c", "listen_addresses="),
                    *("-c", f"fsync={'on' if fsync else 'off'}"),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=base,
                **as_owner,  # type: ignore[arg-type]
            )
        server = Server(sockets, process.pid)
        deadline = time.monotonic() + 60
        while True:
            try:
                server.sql("SELECT 1")
                break
            except Exception:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL did not start: {log.read_text()[-800:]}") from None
                time.sleep(0.1)
        server.sql(f"CREATE ROLE {PASSWORD_ROLE} LOGIN SUPERUSER PASSWORD '{PASSWORD}'")
        yield server
    finally:
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)  # a fast shutdown: clients disconnected, no checkpoint wait
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)
        shutil.rmtree(base, ignore_errors=True)
