"""What every handler shares: the kopf registry, and the operator's settings, API client and metrics.

Handlers register on :data:`REGISTRY` (not kopf's global default), so tests and ``kinfer operator``
run exactly the same set; the shared objects travel in kopf's ``memo`` as a typed :class:`Runtime`.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import kopf

from kinfer.controller.kube import Kube
from kinfer.controller.metrics import OperatorMetrics
from kinfer.controller.settings import Settings

REGISTRY = kopf.OperatorRegistry()


@dataclass
class Runtime:
    """Shared state of one operator run."""

    settings: Settings
    kube: Kube
    metrics: OperatorMetrics
    locks: defaultdict[tuple[str, str], asyncio.Lock] = field(default_factory=lambda: defaultdict(asyncio.Lock))
    """One lock per (namespace, name): reconciles of one object never interleave."""


def runtime(memo: Any) -> Runtime:
    """The :class:`Runtime` stored in kopf's memo by :func:`kinfer.controller.operator.memo_for`."""
    rt = memo.get("kinfer") if hasattr(memo, "get") else None
    if not isinstance(rt, Runtime):
        raise kopf.PermanentError("operator runtime missing from memo (started without kinfer's memo)")
    return rt


def event(obj: Mapping[str, Any], reason: str, message: str, warning: bool = False) -> None:
    """Post a Kubernetes Event about ``obj`` (kopf queues it; posting never blocks a handler)."""
    body = cast(kopf.Body, obj)
    if warning:
        kopf.warn(body, reason=reason, message=message)
    else:
        kopf.info(body, reason=reason, message=message)
