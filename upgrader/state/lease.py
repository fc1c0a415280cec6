"""The cluster lock: a lease in the state database, so two mutating commands never share a cluster.

A lease has a holder token, the host and pid that took it, and an expiry. The holder renews it
from a background thread every third of its time-to-live; a holder that dies stops renewing, and
once the lease has expired anyone may take it over. Taking and taking over are single conditional
statements (INSERT, or UPDATE ... WHERE expires_at <= now), atomic on SQLite and PostgreSQL alike,
so two processes racing for one lease cannot both win. A lease whose holder ran on this host and
whose process no longer exists is taken over at once, without waiting for it to expire.

Every time written or compared here is the database's clock, read in the same transaction, never the
host's: two hosts whose clocks disagree by minutes still agree on when a lease expires. (How long a
holder may go without renewing is measured on its own monotonic clock, which no skew moves.)
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from types import TracebackType

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from upgrader import errors
from upgrader.state import db, orm, records
from upgrader.support import environment, pids

_COLUMNS = ("holder", "host", "pid", "process", "command", "acquired_at", "renewed_at", "expires_at")


def database_now(connection: Connection) -> datetime:
    """The database server's clock (UTC, aware): PostgreSQL's transaction time, SQLite's ``now``."""
    if connection.dialect.name == "postgresql":
        value = connection.execute(select(func.now())).scalar_one()
    else:
        text_value = connection.execute(select(func.strftime("%Y-%m-%d %H:%M:%f", "now"))).scalar_one()
        value = datetime.fromisoformat(str(text_value)).replace(tzinfo=UTC)
    if not isinstance(value, datetime):
        raise errors.StateError(f"the state database's clock said {value!r}, not a time")
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def status(engine: Engine, cluster: str | None = None) -> list[records.LeaseInfo]:
    """The leases on record (expired ones included), for one cluster or all."""
    query = select(orm.Lock).order_by(orm.Lock.cluster)
    if cluster is not None:
        query = query.where(orm.Lock.cluster == cluster)
    try:
        with engine.connect() as connection:
            rows = connection.execute(query).all()
    except SQLAlchemyError as exc:
        raise errors.StateError(f"cannot read the cluster locks: {db.describe_error(exc)}") from exc
    return [
        records.LeaseInfo(
            cluster=row.cluster,
            holder=row.holder,
            host=row.host,
            pid=row.pid,
            command=row.command,
            acquired_at=row.acquired_at,
            renewed_at=row.renewed_at,
            expires_at=row.expires_at,
            process=row.process,
        )
        for row in rows
    ]


def liveness(info: records.LeaseInfo) -> pids.Liveness:
    """Whether a lease's holder still runs, as far as this host can tell (never, for another host)."""
    if info.host != environment.host():
        return pids.Liveness.UNKNOWN
    return pids.judge(info.pid, info.process)


def break_lease(engine: Engine, cluster: str, *, force: bool = False) -> records.LeaseInfo | None:
    """Removes a cluster's lease; returns what was removed. Without ``force`` only a lease that has
    expired or whose holder ran on this host and is gone: a live holder keeps its lock (``Refused``)."""
    held = status(engine, cluster)
    if not held:
        return None
    info = held[0]
    if not force:
        try:
            with engine.connect() as connection:
                now = database_now(connection)
        except SQLAlchemyError as exc:
            raise errors.StateError(f"cannot read the cluster locks: {db.describe_error(exc)}") from exc
        judged = liveness(info)
        if judged is pids.Liveness.ALIVE:
            raise errors.Refused(
                f"the lock on {cluster} is held by {info.describe()}, which is running: stop it (it stops "
                "cleanly on SIGTERM) rather than break its lock; --force breaks it anyway"
            )
        if judged is pids.Liveness.UNKNOWN and not info.expired(now):
            left = (info.expires_at - now).total_seconds()
            raise errors.Refused(
                f"the lock on {cluster} is held by {info.describe()}, whose lease is fresh (it expires in "
                f"{left:.0f}s, renewed while its holder lives) and whose process cannot be checked from here: "
                "if it is gone, wait for the lease to expire; --force breaks it anyway"
            )
    try:
        with engine.begin() as connection:
            connection.execute(delete(orm.Lock).where(orm.Lock.cluster == cluster, orm.Lock.holder == info.holder))
    except SQLAlchemyError as exc:
        raise errors.StateError(f"cannot break the lock on {cluster}: {db.describe_error(exc)}") from exc
    return info


class Lease:
    """A held cluster lock. Use as a context manager: renews in the background, releases on exit."""

    def __init__(
        self,
        engine: Engine,
        info: records.LeaseInfo,
        ttl: timedelta,
        took_over: records.LeaseInfo | None,
        *,
        written: float,
    ) -> None:
        self.engine = engine
        self.info = info
        self.ttl = ttl
        self.took_over = took_over  # the expired lease this one replaced, if any
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._thread: threading.Thread | None = None
        self._renewed = written  # when the expiry last written was computed (time.monotonic())

    @property
    def lost(self) -> bool:
        """True once a renewal found the lease gone or taken, or renewals have failed for a whole TTL."""
        return self._lost.is_set() or time.monotonic() - self._renewed >= self.ttl.total_seconds()

    def check(self) -> None:
        """Raises ``LockLost`` if the lease may no longer be ours; call before each mutating step.

        Failing renewals (the database unreachable, say) are retried in the background; once the last
        successful one is a whole TTL old, the lease may have expired and another process may hold it.
        """
        if self._lost.is_set():
            raise errors.LockLost(
                f"the lock on cluster {self.info.cluster} was lost (expired or broken) while this command "
                "ran: stopping before the next change; check `upgrader lock status`"
            )
        if self.lost:
            raise errors.LockLost(
                f"the lock on cluster {self.info.cluster} could not be renewed for {self.ttl.total_seconds():.0f}s "
                "and may have expired: stopping before the next change; check `upgrader lock status`"
            )

    def confirm(self) -> bool:
        """Asks the database whether the lease is still this holder's (after a step failed, say: a
        broken lock explains the failure better than the error it caused). False marks it lost."""
        try:
            with self.engine.connect() as connection:
                mine = connection.execute(
                    select(orm.Lock.holder).where(
                        orm.Lock.cluster == self.info.cluster, orm.Lock.holder == self.info.holder
                    )
                ).first()
        except SQLAlchemyError:
            return not self.lost  # cannot ask: the renewals' verdict stands
        if mine is None:
            self._lost.set()
        return mine is not None

    def renew(self) -> None:
        started = time.monotonic()
        try:
            with self.engine.begin() as connection:
                now = database_now(connection)
                changed = connection.execute(
                    update(orm.Lock)
                    .where(orm.Lock.cluster == self.info.cluster, orm.Lock.holder == self.info.holder)
                    .values(renewed_at=now, expires_at=now + self.ttl)
                ).rowcount
        except SQLAlchemyError as exc:
            raise errors.StateError(f"cannot renew the lock on {self.info.cluster}: {db.describe_error(exc)}") from exc
        if changed != 1:
            self._lost.set()
            self.check()
        self._renewed = started

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        try:
            with self.engine.begin() as connection:
                connection.execute(
                    delete(orm.Lock).where(orm.Lock.cluster == self.info.cluster, orm.Lock.holder == self.info.holder)
                )
        except SQLAlchemyError as exc:
            raise errors.StateError(
                f"cannot release the lock on {self.info.cluster}: {db.describe_error(exc)}; it expires on its own"
            ) from exc

    def _renew_forever(self) -> None:
        interval = self.ttl.total_seconds() / 3
        while not self._stop.wait(interval):
            try:
                self.renew()
            except errors.LockLost:
                return
            except errors.StateError:
                # A passing database error: try again at the next tick; the lease has two more.
                continue

    def __enter__(self) -> Lease:
        self._thread = threading.Thread(target=self._renew_forever, name=f"lease-{self.info.cluster}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


def acquire(engine: Engine, *, cluster: str, command: str, ttl: timedelta | None = None) -> Lease:
    """Takes the lock on ``cluster`` or raises ``LockHeld`` naming who holds it. ``ttl``: by default
    ``UPGRADER_LOCK_TTL``, else 60 s."""
    ttl = ttl or timedelta(seconds=environment.lock_ttl())
    written = time.monotonic()
    holder, host, pid, process = uuid.uuid4().hex, environment.host(), os.getpid(), pids.identity()

    def lease_at(now: datetime) -> records.LeaseInfo:
        return records.LeaseInfo(
            cluster=cluster,
            holder=holder,
            host=host,
            pid=pid,
            process=process,
            command=command[:200],
            acquired_at=now,
            renewed_at=now,
            expires_at=now + ttl,
        )

    try:
        with engine.begin() as connection:
            info = lease_at(database_now(connection))
            connection.execute(insert(orm.Lock).values(cluster=cluster, **_values(info)))
        return Lease(engine, info, ttl, took_over=None, written=written)
    except IntegrityError:
        pass
    except SQLAlchemyError as exc:
        raise errors.StateError(f"cannot take the lock on {cluster}: {db.describe_error(exc)}") from exc
    previous = status(engine, cluster)
    try:
        with engine.begin() as connection:
            info = lease_at(database_now(connection))
            # Taken over when expired by the database's clock, or at once when its holder ran on this
            # host and its process is gone (killed with SIGKILL, say; judged by boot, pid namespace and
            # start time, so a reused pid or a holder in another container is never taken for gone): the
            # token in the WHERE makes sure it is still that holder's lease.
            takeable = orm.Lock.expires_at <= info.acquired_at
            if previous and liveness(previous[0]) is pids.Liveness.GONE:
                takeable = takeable | (orm.Lock.holder == previous[0].holder)
            taken = connection.execute(
                update(orm.Lock).where(orm.Lock.cluster == cluster, takeable).values(**_values(info))
            ).rowcount
    except SQLAlchemyError as exc:
        raise errors.StateError(f"cannot take the lock on {cluster}: {db.describe_error(exc)}") from exc
    if taken == 1:
        return Lease(engine, info, ttl, took_over=previous[0] if previous else None, written=written)
    current = status(engine, cluster)
    if not current:  # released between our two statements: try once more from the start
        return acquire(engine, cluster=cluster, command=command, ttl=ttl)
    held = current[0]
    raise errors.LockHeld(
        f"cluster {cluster} is locked by {held.describe()} until "
        f"{held.expires_at:%Y-%m-%d %H:%M:%S} UTC (the database's clock); if that process is gone, wait for "
        f"the lease to expire or run `upgrader lock break`"
    )


def _values(info: records.LeaseInfo) -> dict[str, object]:
    return {name: getattr(info, name) for name in _COLUMNS}
