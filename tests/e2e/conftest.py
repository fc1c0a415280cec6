"""Labs for end-to-end tests, always stopped by pid at the end, with a check that nothing is left."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from upgrader.core.versions import Version
from upgrader.lab import control, create, processes, topology


def _started(lab: topology.Lab) -> list[processes.ProcessId]:
    found = processes.Registry(lab.run_dir / "pids.json").read()
    supervisor = control.supervisor(lab)
    return found + ([supervisor] if supervisor else [])


class Labs:
    """Creates labs and guarantees they are down (and every process they started gone) afterwards."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.labs: list[topology.Lab] = []
        self.seen: list[processes.ProcessId] = []

    def up(
        self,
        name: str,
        *,
        version: str = "1.30.6",
        control_planes: int = 3,
        workers: int = 3,
        layout: topology.Layout = topology.Layout.KUBEADM,
        ssh: bool = False,
        packages: str = "binary",
        etcd_version: str | None = None,
        etcd_nodes: int = 0,
    ) -> topology.Lab:
        lab = create.create(
            self.base / name,
            version=Version.parse(version),
            control_planes=control_planes,
            workers=workers,
            layout=layout,
            ssh_mode=ssh,
            packages=packages,
            etcd_version=Version.parse(etcd_version) if etcd_version else None,
            etcd_nodes=etcd_nodes,
        )
        self.labs.append(lab)
        control.up(lab.dir, timeout=60)
        self.remember(lab)
        return lab

    def remember(self, lab: topology.Lab) -> None:
        self.seen.extend(_started(lab))

    def stop_all(self) -> None:
        for lab in self.labs:
            self.remember(lab)
            control.down(lab.dir)
        left = [p for p in self.seen if p.alive()]
        assert not left, f"processes left behind: {[p.pid for p in left]}"


class SharedLab:
    """One 3+3 lab for the tests that do not change versions, up only while they run: an idle lab costs
    about a quarter of a core, and the suite has two. Its tests form one xdist group (see
    ``pytest_collection_modifyitems``), so they run back to back on one worker, and the lab is stopped
    after the last of them (``pytest_runtest_teardown``); a later user would start it again."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.rounds = 0
        self.labs: Labs | None = None
        self.lab: topology.Lab | None = None

    def get(self) -> topology.Lab:
        if self.lab is None:
            self.rounds += 1
            base = self.base / f"round-{self.rounds}"
            base.mkdir()
            self.labs = Labs(base)
            self.lab = self.labs.up("shared")
        return self.lab

    def stop(self) -> None:
        if self.labs is not None:
            try:
                self.labs.stop_all()
            finally:
                self.labs = self.lab = None


_SHARED = pytest.StashKey[SharedLab]()
SHARED_GROUP = "shared-lab"


@pytest.fixture(scope="session")
def _shared(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedLab]:
    shared = SharedLab(tmp_path_factory.mktemp("labs"))
    request.config.stash[_SHARED] = shared
    try:
        yield shared
    finally:
        shared.stop()


@pytest.fixture
def shared_lab(_shared: SharedLab) -> topology.Lab:
    return _shared.get()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "shared_lab" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group(SHARED_GROUP))


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    uses = "shared_lab" in getattr(item, "fixturenames", ())
    if uses and (nextitem is None or "shared_lab" not in getattr(nextitem, "fixturenames", ())):
        shared = item.config.stash.get(_SHARED, None)
        if shared is not None:
            shared.stop()


@pytest.fixture
def labs(tmp_path: Path) -> Iterator[Labs]:
    made = Labs(tmp_path)
    try:
        yield made
    finally:
        made.stop_all()


def wait_for(check: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def descendants(root: int) -> set[int]:
    """Every process below ``root`` now (children, their children, ...), from /proc."""
    found: set[int] = set()
    frontier = [root]
    while frontier:
        pid = frontier.pop()
        try:
            tasks = list(Path(f"/proc/{pid}/task").iterdir())
        except OSError:  # the process ended while we walked the tree
            continue
        for task in tasks:
            try:
                children = {int(c) for c in (task / "children").read_text().split()}
            except OSError:
                continue
            frontier.extend(children - found)
            found |= children
    return found


def state(lab: topology.Lab) -> dict[str, object]:
    return dict(json.loads((lab.run_dir / "state.json").read_text()))
