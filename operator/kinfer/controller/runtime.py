"""What every handler shares: the kopf registry, and the operator's settings, API client and metrics.

Handlers register on :data:`REGISTRY` (not kopf's global default), so tests and ``kinfer operator``
run exactly the same set; the shared objects travel in kopf's ``memo`` as a typed :class:`Runtime`.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import kopf

from kinfer.controller.kube import Kube, KubeError
from kinfer.controller.metrics import OperatorMetrics
from kinfer.controller.settings import Settings

REGISTRY = kopf.OperatorRegistry()


@dataclass
class Backoff:
    """Exponential backoff with full jitter per object, for API calls that failed for a passing reason.

    The n-th consecutive failure waits a random time in [d/2, d] with d = base·2ⁿ capped at ``cap``;
    a server's ``Retry-After`` (429 Too Many Requests, 503) is a floor. A success resets the object.
    """

    base_s: float = 1.0
    cap_s: float = 30.0
    failures: dict[tuple[str, str], int] = field(default_factory=dict)
    rng: random.Random = field(default_factory=random.Random)

    def next_delay(self, key: tuple[str, str], exc: KubeError | None = None) -> float:
        """Seconds to wait before retrying ``key`` after this failure."""
        n = self.failures.get(key, 0)
        self.failures[key] = n + 1
        ceiling = min(self.cap_s, self.base_s * 2.0**n)
        delay = self.rng.uniform(ceiling / 2, ceiling)
        if exc is not None and exc.retry_after_s is not None:
            delay = max(delay, min(exc.retry_after_s, self.cap_s * 4))
        return delay

    def reset(self, key: tuple[str, str]) -> None:
        """The object's last call went through."""
        self.failures.pop(key, None)


@dataclass
class Runtime:
    """Shared state of one operator run."""

    settings: Settings
    kube: Kube
    metrics: OperatorMetrics
    locks: defaultdict[tuple[str, str], asyncio.Lock] = field(default_factory=lambda: defaultdict(asyncio.Lock))
    """One lock per (namespace, name): reconciles of one object never interleave."""
    backoff: Backoff = field(default_factory=Backoff)
    """Retry delays of objects whose API calls failed for a passing reason."""
    role: str = "standalone"
    """``standalone`` (no election), ``standing-by`` (waiting for the Lease) or ``leading``."""
    health_server: Any = None
    """The ``/healthz`` + ``/metrics`` server (an aiohttp runner), once started."""
    reconciled: dict[tuple[str, str], float] = field(default_factory=dict)
    """Loop time of each InferenceService's last reconcile (the resync timer's clock)."""
    generators: dict[tuple[str, str], tuple[list[str], str | None]] = field(default_factory=dict)
    """Each running experiment's generator control URLs and token, as its daemon last saw them: a rate
    change is pushed at once, without reading them from the API again."""

    def __post_init__(self) -> None:
        self.backoff.cap_s = self.settings.max_backoff_s


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
