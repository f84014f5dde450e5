"""Kubernetes-style conditions: set one in a list, keeping ``lastTransitionTime`` when nothing flipped."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any


def now_rfc3339() -> str:
    """The current UTC time as RFC 3339 with seconds precision (what the API server writes)."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def set_condition(
    conditions: Sequence[Mapping[str, Any]] | None,
    type_: str,
    status: bool | str,
    reason: str,
    message: str,
    now: str | None = None,
) -> list[dict[str, Any]]:
    """A new list with condition ``type_`` set; its transition time changes only when status does."""
    value = ("True" if status else "False") if isinstance(status, bool) else status
    out: list[dict[str, Any]] = []
    previous: Mapping[str, Any] | None = None
    for cond in conditions or []:
        if cond.get("type") == type_:
            previous = cond
        else:
            out.append(dict(cond))
    when = now or now_rfc3339()
    if previous is not None and previous.get("status") == value:
        when = previous.get("lastTransitionTime") or when
    out.append({"type": type_, "status": value, "reason": reason, "message": message, "lastTransitionTime": when})
    return sorted(out, key=lambda c: str(c.get("type")))


def find(conditions: Sequence[Mapping[str, Any]] | None, type_: str) -> Mapping[str, Any] | None:
    """The condition of that type, if present."""
    return next((c for c in conditions or [] if c.get("type") == type_), None)


def differs(current: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> bool:
    """Whether a status patch would change anything (every desired key compared, recursively)."""
    current = current or {}
    for key, value in desired.items():
        have = current.get(key)
        if isinstance(value, Mapping) and isinstance(have, Mapping):
            if differs(have, value):
                return True
        elif have != value:
            return True
    return False
