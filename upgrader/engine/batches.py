"""Kubelets changed a batch of nodes at a time: how an upgrade's node steps and a rollback's kubelet
step both work. Every node of a batch is cordoned and drained in parallel, then one playbook run for
the nodes whose kubelet is not at the version yet (one Ansible process for the batch, not one per
node), then each is Ready at the version and uncordoned."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait

from upgrader.core.versions import Version
from upgrader.engine.driver import Driver
from upgrader.engine.ports import CORDONED, Drainer, Event, KubeletRollout, Probe


class NodeBatches:
    def __init__(self, driver: Driver, drainer: Drainer, probe: Probe, kubelets: KubeletRollout) -> None:
        self.driver = driver
        self.drainer = drainer
        self.probe = probe
        self.kubelets = kubelets

    def run(self, run_id: str, position: int, nodes: tuple[str, ...], version: Version) -> None:
        """One batch. A node already at ``version`` and Ready is done (a resumed run does not drain it
        again); one this run cordoned in an earlier attempt is uncordoned."""
        driver = self.driver
        earlier = driver.journal.step(run_id, position).detail  # what an interrupted attempt cordoned
        state = {node: self.probe.kubelet(node) for node in nodes}
        ours = {node: bool(earlier.get(f"{CORDONED}{node}")) for node in nodes}
        todo = []
        for node in nodes:
            running, ready = state[node]
            if running == version and ready and (not ours[node] or not self.drainer.cordoned(node)):
                if ours[node]:
                    driver.progress(run_id, position, {f"{CORDONED}{node}": None})
                driver.node_done(run_id, position, node, "already there")
            else:
                todo.append(node)
        if not todo:
            return
        driver.lease.check()
        stale = tuple(node for node in todo if state[node][0] != version)
        # A node whose kubelet is at the version already was drained before (the kubelet is replaced only
        # after the drain) and has stayed cordoned since: it is not drained again.
        evicted = self._in_parallel(
            todo, lambda node: self._drain(run_id, position, node, ours) if node in stale else 0
        )
        if stale:
            driver.lease.check()
            for node in stale:
                driver.event("node-playbook", f"{node}: kubelet playbook", position, node)
            self.kubelets.kubelet(stale, version)
        for node in todo:
            driver.event("node-waiting", f"{node}: waiting for Ready", position, node)
            driver.wait(
                lambda node=node: self.probe.kubelet(node) == (version, True),  # type: ignore[misc]
                f"{node} to be Ready with kubelet v{version}",
            )
            if ours[node]:
                self.drainer.uncordon(node)
                driver.progress(run_id, position, {f"{CORDONED}{node}": None})
            driver.node_done(run_id, position, node, f"upgraded ({evicted[node]} pods evicted)")

    def _drain(self, run_id: str, position: int, node: str, ours: dict[str, bool]) -> int:
        """Cordons and drains one node. upgrader uncordons only what it cordoned: it journals that it is
        about to cordon a schedulable node *before* the cordon, so a run killed in between still knows
        the node is its own to uncordon on resume. A node someone else cordoned stays cordoned."""
        if not ours[node] and not self.drainer.cordoned(node):
            self.driver.progress(run_id, position, {f"{CORDONED}{node}": "by upgrader, to drain it"})
            ours[node] = True
        self.drainer.cordon(node)
        self.driver.observe(Event("node-draining", f"{node}: cordoned, draining", position=position, node=node))
        evicted = self.drainer.drain(node)
        self.driver.observe(
            Event("node-drained", f"{node}: drained ({evicted} pods evicted)", position=position, node=node)
        )
        return evicted

    def _in_parallel(self, nodes: list[str], work: Callable[[str], int]) -> dict[str, int]:
        """``work`` on every node at once; the first failure cancels the others and is raised."""
        results: dict[str, int] = {}
        with ThreadPoolExecutor(max_workers=max(1, len(nodes)), thread_name_prefix="node") as pool:
            futures: dict[Future[int], str] = {pool.submit(work, node): node for node in nodes}
            try:
                pending = set(futures)
                while pending:
                    done, pending = wait(pending, timeout=0.5, return_when=FIRST_EXCEPTION)
                    for future in done:
                        results[futures[future]] = future.result()
            except BaseException:
                self.driver.cancel.set()  # stop the other nodes' drains
                raise
        return results
