"""Renders a plan (its JSON form) as a table for people or as markdown for change reviews.

Both work from the plan's dict, so a saved plan renders exactly like a fresh one. Long node lists
are shortened here (the JSON keeps every name).
"""

from __future__ import annotations

from typing import Any

from upgrader.cli import _render

_NODE_LIMIT = 6


def _nodes(names: list[str]) -> str:
    if len(names) <= _NODE_LIMIT:
        return ", ".join(names)
    return f"{', '.join(names[:_NODE_LIMIT])} and {len(names) - _NODE_LIMIT} more"


def _title(plan: dict[str, Any]) -> str:
    summary = plan["summary"]
    options = plan["options"]
    mode = "two-step" if options["two_step"] else "one-step"
    return (
        f"plan {plan['id']}: {summary['from']} -> {plan['target']}  "
        f"(catalog {plan['catalog']}, {mode}, max unavailable {options['max_unavailable']})"
    )


def _drain_groups(per_node: dict[str, int]) -> list[tuple[int, list[str]]]:
    by_count: dict[int, list[str]] = {}
    for name, count in per_node.items():
        by_count.setdefault(count, []).append(name)
    return sorted(by_count.items(), reverse=True)


def _etcd_cell(step: dict[str, Any]) -> str:
    """etcd's version after the step and who moves it there: kubeadm at a hop, upgrader in an etcd step."""
    if step["kind"] == "etcd":
        return f"{step.get('version')} (upgrader)"
    if not step.get("etcd"):
        return ""
    return f"{step['etcd']} ({step.get('etcd_mover') or 'kubeadm'})"


def _step_rows(plan: dict[str, Any]) -> list[tuple[object, ...]]:
    return [
        (
            i,
            s["kind"],
            s.get("version") or "",
            s.get("emulated", ""),
            _etcd_cell(s),
            (f"[{s['batch']}] " if "batch" in s else "") + _nodes(s["nodes"]),
            s.get("reason", ""),
        )
        for i, s in enumerate(plan["steps"], start=1)
    ]


def table(plan: dict[str, Any]) -> str:
    lines = [_title(plan)]
    if plan["executable"]:
        lines.append("executable: yes")
    else:
        lines.append(f"executable: NO, {len(plan['blockers'])} blocker(s)")
    for heading, items in (("BLOCKERS", plan["blockers"]), ("WARNINGS", plan["warnings"])):
        if items:
            lines += ["", heading]
            for item in items:
                lines.append(f"  {item['code']}: {item['message']}")
                lines.append(f"    what to do: {item['remedy']}")
    lines += ["", "STEPS"]
    if plan["steps"]:
        rows = _step_rows(plan)
        body = _render.table(("#", "KIND", "VERSION", "EMULATED", "ETCD", "NODES", "WHY"), rows)
        lines += ["  " + line for line in body.splitlines()]
    else:
        lines.append("  nothing to do: the cluster is at the target")
    summary = plan["summary"]
    lines += [
        "",
        f"DRAINS: {summary['drains']} (upgrading every node at every minor: {summary['drains_if_every_minor']}, "
        f"saved: {summary['drains_saved']})",
    ]
    for count, names in _drain_groups(summary["drains_per_node"]):
        lines.append(f"  {count} drain{'s' if count != 1 else ''}: {_nodes(names)}")
    return "\n".join(lines)


def _md(text: object) -> str:
    return str(text).replace("|", "\\|")


def markdown(plan: dict[str, Any]) -> str:
    summary = plan["summary"]
    options = plan["options"]
    lines = [
        f"## Upgrade plan `{plan['id']}`: {summary['from']} → {plan['target']}",
        "",
        f"- **Executable:** {'yes' if plan['executable'] else 'no (' + str(len(plan['blockers'])) + ' blockers)'}",
        f"- **Catalog:** {plan['catalog']}; **mode:** {'two-step' if options['two_step'] else 'one-step'}; "
        f"**max unavailable:** {options['max_unavailable']}",
        f"- **Drains:** {summary['drains']} (every node at every minor would be "
        f"{summary['drains_if_every_minor']}); **control-plane steps:** {summary['control_plane_steps']}; "
        f"**snapshots:** {summary['snapshots']}",
    ]
    for heading, items in (("Blockers", plan["blockers"]), ("Warnings", plan["warnings"])):
        if items:
            lines += ["", f"### {heading}", ""]
            lines += [f"- **{i['code']}**: {_md(i['message'])}. *What to do:* {_md(i['remedy'])}" for i in items]
    lines += ["", "### Steps", ""]
    if plan["steps"]:
        lines += ["| # | kind | version | emulated | etcd | nodes | why |", "|---|---|---|---|---|---|---|"]
        lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in _step_rows(plan)]
    else:
        lines.append("Nothing to do: the cluster is at the target.")
    lines += ["", "### Drains per node", ""]
    lines += [
        f"- {count} drain{'s' if count != 1 else ''}: {_md(_nodes(names))}"
        for count, names in _drain_groups(summary["drains_per_node"])
    ]
    return "\n".join(lines) + "\n"
