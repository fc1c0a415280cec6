"""One session per command with a cluster: the config, its checked inventory, one Kubernetes client,
one etcd client, and the playbook runner, all opened once and passed down to the services.

``ClusterSession.open`` is the one door every command that reaches a cluster goes through, so what
must hold before anything is sent holds everywhere:

- the inventory is read the way Ansible reads it and checked (groups, node names) before any
  playbook can run (``executor.inventory.load``);
- no credential or snapshot travels unprotected: a plain-http etcd endpoint (a snapshot holds every
  Secret of the cluster; a configured client certificate would silently not be used), an s3 tier that
  sends snapshots unencrypted over plain http, and a kubeconfig
  with a plain-http server or ``insecure-skip-tls-verify`` are refused (exit 2) unless the command was
  given ``--insecure``, and what was allowed is kept in ``insecure`` for the command to record.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from upgrader import errors
from upgrader.core import config
from upgrader.etcd import kv
from upgrader.executor import inventory, runner
from upgrader.kube import cluster as kube
from upgrader.support import redaction

ETCD_TIMEOUT = 10.0


class InsecureTransport(errors.UsageError):
    """A connection would carry credentials or cluster data unencrypted or unverified."""


def _plain_etcd(cfg: config.ClusterConfig) -> list[str]:
    plain = [e for e in cfg.etcd.endpoints if e.startswith("http://")]
    if not plain:
        return []
    unused = " and the configured client certificate would not be used" if cfg.etcd.cert else ""
    return [
        f"etcd endpoint {plain[0]} is plain http: etcd's data, and a snapshot holding every Secret, "
        f"would travel unencrypted{unused}"
    ]


def _plain_s3(cfg: config.ClusterConfig) -> list[str]:
    s3 = cfg.snapshots.s3
    if s3 is None or s3.encrypt or not (s3.endpoint or "").startswith("http://"):
        return []
    return [
        f"the s3 tier sends snapshots unencrypted (encrypt: false) over plain http to "
        f"{redaction.url(s3.endpoint or '')}: every Secret of the cluster would travel in clear text"
    ]


def plain_transport(cfg: config.ClusterConfig) -> list[str]:
    """What in the config would carry cluster data unencrypted: refused unless ``--insecure``."""
    return _plain_etcd(cfg) + _plain_s3(cfg)


def refuse_plain(cfg: config.ClusterConfig, *, insecure: bool, extra: list[str] | None = None) -> tuple[str, ...]:
    """Raises ``InsecureTransport`` for the first plain transport unless ``insecure``; what was allowed."""
    found = plain_transport(cfg) + (extra or [])
    if found and not insecure:
        raise InsecureTransport(f"{found[0]}; fix {cfg.source or 'the cluster config'}, or pass --insecure")
    return tuple(found)


@dataclass
class ClusterSession:
    cfg: config.ClusterConfig
    inventory: inventory.Inventory
    api: kube.Cluster  # one Kubernetes client
    etcd: kv.KV  # one etcd client
    insecure: tuple[str, ...] = ()  # what --insecure allowed, for the command to record
    cancel: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def open(cls, cfg: config.ClusterConfig, *, insecure: bool = False) -> ClusterSession:
        # Reading the inventory is an ansible-inventory process and making the Kubernetes client mostly
        # imports: about a second each, so they overlap. The inventory's verdict comes first, as before.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="inventory") as pool:
            reading = pool.submit(inventory.load, cfg.inventory)
            try:
                api = kube.Cluster.connect(cfg.kubeconfig, cfg.context)
            except BaseException:
                reading.result()  # an inventory problem is reported before a kubeconfig one
                raise
            try:
                inv = reading.result()
            except BaseException:
                api.close()
                raise
        try:
            found = refuse_plain(cfg, insecure=insecure, extra=api.insecure_settings())
            if found:
                api.accept_insecure()
        except BaseException:
            api.close()
            raise
        store = kv.KV(kv.target(cfg.etcd, timeout=ETCD_TIMEOUT))
        return cls(cfg=cfg, inventory=inv, api=api, etcd=store, insecure=found)

    @property
    def name(self) -> str:
        return self.cfg.name

    def playbook(
        self,
        playbook: str,
        *,
        extravars: Mapping[str, Any] | None = None,
        limit: tuple[str, ...] = (),
        timeout: int = 600,
    ) -> runner.PlaybookResult:
        """Runs one of upgrader's playbooks on this cluster's inventory. Every playbook gets
        ``upgrader_bin_dir`` (packages.bin_dir; an inventory's own ``bin_dir`` wins for its hosts) and
        ``upgrader_kubeadm_patches`` (upgrade.kubeadm_patches, or empty)."""
        request = runner.PlaybookRequest(
            playbook,
            self.inventory,
            extravars={
                "upgrader_bin_dir": self.cfg.packages.bin_dir,
                "upgrader_kubeadm_patches": self.cfg.upgrade.kubeadm_patches or "",
                **(extravars or {}),
            },
            limit=limit,
            timeout=timeout,
            host_key_checking=self.cfg.ansible.host_key_checking,
            forks=self.cfg.ansible.forks,
            pipelining=self.cfg.ansible.pipelining,
            become=self.cfg.ansible.become,
            become_user=self.cfg.ansible.become_user,
            become_method=self.cfg.ansible.become_method,
        )
        return runner.run(request, cancel=self.cancel)

    def close(self) -> None:
        try:
            self.etcd.close()
        finally:
            self.api.close()

    def __enter__(self) -> ClusterSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
