"""The values a plan is made of: steps, options, the plan itself and its JSON form."""

from __future__ import annotations

import enum
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from upgrader import errors
from upgrader.core.rules import facts as facts_mod
from upgrader.core.rules.facts import Facts
from upgrader.core.rules.findings import Finding, Severity
from upgrader.core.versions import Minor, Version

_PERCENT = re.compile(r"^(\d{1,3})%$")


class StepKind(enum.StrEnum):
    SNAPSHOT = "snapshot"
    ETCD = "etcd"  # every etcd member to ``version``, one at a time, the leader last
    CONTROL_PLANE = "control-plane"
    EMULATION_COMMIT = "emulation-commit"
    NODES = "nodes"


@dataclass(frozen=True)
class MaxUnavailable:
    """How many worker nodes a ``nodes`` step drains at once: a count, or a percentage of the workers."""

    count: int | None = 1
    percent: int | None = None

    @classmethod
    def parse(cls, value: int | str) -> MaxUnavailable:
        if isinstance(value, int) and not isinstance(value, bool):
            if value >= 1:
                return cls(count=value)
        elif isinstance(value, str):
            text = value.strip()
            if text.isdigit() and int(text) >= 1:
                return cls(count=int(text))
            match = _PERCENT.match(text)
            if match and 1 <= int(match.group(1)) <= 100:
                return cls(count=None, percent=int(match.group(1)))
        raise errors.InputError(f"--max-unavailable takes a number of nodes or a percentage like 25%, not {value!r}")

    def batch_size(self, workers: int) -> int:
        if self.count is not None:
            return self.count
        assert self.percent is not None
        return max(1, workers * self.percent // 100)

    def __str__(self) -> str:
        return f"{self.percent}%" if self.percent is not None else str(self.count)


@dataclass(frozen=True)
class PlanOptions:
    two_step: bool = True
    max_unavailable: MaxUnavailable = field(default_factory=MaxUnavailable)

    def as_dict(self) -> dict[str, Any]:
        return {"two_step": self.two_step, "max_unavailable": str(self.max_unavailable)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlanOptions:
        return cls(two_step=bool(data["two_step"]), max_unavailable=MaxUnavailable.parse(data["max_unavailable"]))


@dataclass(frozen=True)
class Step:
    kind: StepKind
    version: Version | None = None
    nodes: tuple[str, ...] = ()
    emulated: Minor | None = None
    etcd: Version | None = None  # control-plane steps: the etcd version running afterwards
    etcd_mover: str = ""  # control-plane steps: who moves etcd at this hop, when it is not kubeadm
    reason: str = ""
    batch: tuple[int, int] | None = None  # nodes steps: (this batch, of how many)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind.value,
            "version": str(self.version) if self.version else None,
            "nodes": list(self.nodes),
        }
        if self.emulated is not None:
            out["emulated"] = str(self.emulated)
        if self.etcd is not None:
            out["etcd"] = str(self.etcd)
        if self.etcd_mover:
            out["etcd_mover"] = self.etcd_mover
        if self.batch is not None:
            out["batch"] = f"{self.batch[0]}/{self.batch[1]}"
        if self.reason:
            out["reason"] = self.reason
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Step:
        batch = data.get("batch")
        position = tuple(int(n) for n in str(batch).split("/")) if batch else None
        return cls(
            kind=StepKind(data["kind"]),
            version=Version.parse(data["version"]) if data.get("version") else None,
            nodes=tuple(data.get("nodes", ())),
            emulated=Minor.parse(data["emulated"]) if data.get("emulated") else None,
            etcd=Version.parse(data["etcd"]) if data.get("etcd") else None,
            etcd_mover=str(data.get("etcd_mover", "")),
            reason=str(data.get("reason", "")),
            batch=(position[0], position[1]) if position else None,
        )


@dataclass(frozen=True)
class Summary:
    start: str  # the control plane's version(s) at the start, e.g. "1.30.6" or "1.30.6..1.31.13"
    drains: int
    drains_every_minor: int  # what upgrading every node at every minor would cost
    drains_per_node: dict[str, int]
    control_plane_steps: int
    snapshots: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "from": self.start,
            "drains": self.drains,
            "drains_if_every_minor": self.drains_every_minor,
            "drains_saved": self.drains_every_minor - self.drains,
            "drains_per_node": dict(self.drains_per_node),
            "control_plane_steps": self.control_plane_steps,
            "snapshots": self.snapshots,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Summary:
        return cls(
            start=str(data["from"]),
            drains=int(data["drains"]),
            drains_every_minor=int(data["drains_if_every_minor"]),
            drains_per_node={str(k): int(v) for k, v in data["drains_per_node"].items()},
            control_plane_steps=int(data["control_plane_steps"]),
            snapshots=int(data["snapshots"]),
        )


@dataclass(frozen=True)
class Plan:
    target: Version
    catalog_version: str
    options: PlanOptions
    steps: tuple[Step, ...]
    blockers: tuple[Finding, ...]
    warnings: tuple[Finding, ...]
    summary: Summary
    facts: Facts  # what the plan was made from, typed; stored and hashed as its normalised mapping

    @property
    def executable(self) -> bool:
        return not self.blockers

    def _content(self) -> dict[str, Any]:
        return {
            "target": str(self.target),
            "catalog": self.catalog_version,
            "options": self.options.as_dict(),
            "steps": [s.as_dict() for s in self.steps],
            "blockers": [b.as_dict() for b in self.blockers],
            "warnings": [w.as_dict() for w in self.warnings],
            "facts": self.facts.as_mapping(),
        }

    @property
    def id(self) -> str:
        """A content hash: the same facts, target, options and catalog always give the same id."""
        canonical = json.dumps(self._content(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def as_dict(self) -> dict[str, Any]:
        content = self._content()
        return {
            "id": self.id,
            "target": content["target"],
            "executable": self.executable,
            "catalog": content["catalog"],
            "options": content["options"],
            "blockers": content["blockers"],
            "warnings": content["warnings"],
            "steps": content["steps"],
            "summary": self.summary.as_dict(),
        }

    @classmethod
    def from_dict(cls, body: dict[str, Any], facts: Mapping[str, Any]) -> Plan:
        """A saved plan (its ``as_dict`` and the normalised facts it was made from) as typed values.

        Raises ``InputError`` when the body does not reproduce its own id: a row edited by hand, or
        written by an upgrader whose plan format differs, is never executed."""
        try:
            plan = cls(
                target=Version.parse(body["target"]),
                catalog_version=str(body["catalog"]),
                options=PlanOptions.from_dict(body["options"]),
                steps=tuple(Step.from_dict(s) for s in body["steps"]),
                blockers=tuple(Finding.from_dict(b, Severity.BLOCKER) for b in body["blockers"]),
                warnings=tuple(Finding.from_dict(w, Severity.WARNING) for w in body["warnings"]),
                summary=Summary.from_dict(body["summary"]),
                facts=facts_mod.from_mapping(facts),
            )
        except (KeyError, TypeError, ValueError, errors.InputError) as exc:
            raise errors.InputError(f"saved plan {body.get('id', '?')} cannot be read: {exc}") from None
        if plan.id != body.get("id"):
            raise errors.InputError(
                f"saved plan {body.get('id', '?')} does not match its content (it hashes to {plan.id}): "
                "make the plan again"
            )
        return plan
