"""Label selectors as apimachinery reads them: the string form of a ``labelSelector`` query
(``pkg/labels/selector.go``: ``a=b``, ``a==b``, ``a!=b``, ``a in (x,y)``, ``a notin (x)``, ``a``, ``!a``)
and the structured form of an object's ``selector`` (``metav1.LabelSelectorAsSelector``: ``matchLabels``
and ``matchExpressions`` with In, NotIn, Exists, DoesNotExist).

A selector the lab cannot read is an error (400 for a query), never a selector that matches everything.
"""

from __future__ import annotations

import re
from typing import Any

_SET = re.compile(r"^\s*(!?)\s*([A-Za-z0-9._/-]+)\s*(?:(notin|in)\s*\(([^)]*)\))?\s*$")


class BadSelector(ValueError):
    pass


def _terms(selector: str) -> list[str]:
    """Splits on the commas outside parentheses (``a in (x,y),b`` is two terms)."""
    terms: list[str] = []
    current: list[str] = []
    depth = 0
    for char in selector:
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            terms.append("".join(current))
            current = []
        else:
            current.append(char)
    terms.append("".join(current))
    return [t.strip() for t in terms if t.strip()]


def _term_matches(labels: dict[str, str], term: str) -> bool:
    for operator in ("!=", "==", "="):
        if operator in term and "(" not in term:
            key, value = (part.strip() for part in term.split(operator, 1))
            if not key:
                raise BadSelector(f"no key in {term!r}")
            return (labels.get(key) != value) if operator == "!=" else labels.get(key) == value
    found = _SET.match(term)
    if not found:
        raise BadSelector(f"cannot read {term!r}")
    negate, key, operator, values = found.groups()
    if operator:
        if negate:
            raise BadSelector(f"cannot read {term!r}")
        wanted = {v.strip() for v in values.split(",") if v.strip()}
        inside = key in labels and labels[key] in wanted
        return inside if operator == "in" else not inside
    return (key not in labels) if negate else (key in labels)


def query_matches(labels: dict[str, str], selector: str) -> bool:
    """The string form, as in ``?labelSelector=``; raises BadSelector on what it cannot read."""
    return all(_term_matches(labels, term) for term in _terms(selector))


def object_matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """The structured form. A null selector matches nothing; an empty one (``{}``) matches every pod, as
    policy/v1 defines it for a budget. Raises BadSelector on an operator apimachinery refuses."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression.get("key"), expression.get("operator")
        values = set(expression.get("values") or [])
        if operator == "In":
            ok = key in labels and labels[key] in values
        elif operator == "NotIn":
            ok = not (key in labels and labels[key] in values)
        elif operator == "Exists":
            ok = key in labels
        elif operator == "DoesNotExist":
            ok = key not in labels
        else:
            raise BadSelector(f"{operator!r} is not a valid label selector operator")
        if not ok:
            return False
    return True
