"""The planning service: facts in (a file now, a live cluster later), a plan out, optionally saved.

It joins what the pure planner needs: the facts file parsed strictly, defaults from the cluster
config when one is given, the rules catalog (``catalogs.current``: ``--catalog``, else the one
``catalog update`` refreshed, else the bundled one), and the state store only
when asked to save, so ``upgrader plan`` without ``--save`` needs no database.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from upgrader import errors
from upgrader.core import config
from upgrader.core.planner import core, model
from upgrader.core.rules import facts as facts_mod
from upgrader.core.versions import parse_target
from upgrader.usecases import catalogs


@dataclass(frozen=True)
class PlanRequest:
    target: str
    facts_file: Path | None = None
    cluster_config: Path | None = None
    one_step: bool = False
    max_unavailable: str | None = None
    catalog_file: Path | None = None
    insecure: bool = False


def read_facts_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise errors.InputError(f"facts file not found: {path}") from None
    except json.JSONDecodeError as exc:
        raise errors.InputError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    except RecursionError:
        raise errors.InputError(f"{path}: nested too deeply to be a facts file") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise errors.InputError(f"cannot read facts file {path}: {exc}") from None


@dataclass(frozen=True)
class PlanResult:
    plan: model.Plan
    cluster: str | None
    warnings: tuple[str, ...] = ()  # what did not agree while the facts were collected from the cluster


def make_plan(request: PlanRequest) -> PlanResult:
    target = parse_target(request.target)
    cfg = config.load(request.cluster_config) if request.cluster_config is not None else None
    in_use = catalogs.current(request.catalog_file)
    catalog = in_use.catalog
    collection_warnings: list[str] = [in_use.warning] if in_use.warning else []
    if request.facts_file is not None:
        raw = read_facts_file(request.facts_file)
    elif cfg is not None:
        from upgrader.cluster import live_facts, session

        with session.ClusterSession.open(cfg, insecure=request.insecure) as opened:
            collected = live_facts.collect(opened, catalog=catalog)
        raw, collection_warnings = collected.data, collected.warnings
    else:
        raise errors.UsageError("plan from a live cluster with -c cluster.yaml, or from a file with --facts FILE")
    try:
        facts = facts_mod.from_mapping(raw)
    except errors.InputError as exc:
        where = request.facts_file or "the live cluster's facts"
        raise errors.InputError(f"{where}: {exc}") from None
    two_step = (cfg.upgrade.two_step if cfg else True) and not request.one_step
    raw_max: int | str = request.max_unavailable or (cfg.upgrade.max_unavailable if cfg else 1)
    options = model.PlanOptions(two_step=two_step, max_unavailable=model.MaxUnavailable.parse(raw_max))
    plan = core.plan(facts, target, options, catalog)
    return PlanResult(
        plan=plan,
        cluster=cfg.name if cfg else facts.cluster,
        warnings=tuple(collection_warnings),
    )


def save(result: PlanResult, db_url: str | None) -> bool:
    """Stores the plan in the state database; False when that exact plan was already there."""
    from upgrader.state import records, store

    with store.Store.open(db_url) as state:
        body = result.plan.as_dict()
        return state.save_plan(
            plan_id=records.PlanId(body["id"]),
            body=body,
            facts=result.plan.facts.as_mapping(),  # normalised: only the fields the planner reads
            target=body["target"],
            executable=result.plan.executable,
            cluster=result.cluster,
        )


def show(plan_id: str, db_url: str | None) -> dict[str, Any]:
    from upgrader.state import store

    with store.Store.open(db_url) as state:
        stored = state.plan(plan_id)
    return {**stored.body, "saved_at": stored.created_at, "cluster": stored.cluster}
