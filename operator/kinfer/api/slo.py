"""Judge measured results against a LoadExperiment's SLO — one rule for the operator, local mode and CLI.

A verdict never flatters (STYLE.md 19): failed and dropped requests count against the latency
objective as well as the success rate, and every verdict says the success rate beside its latency.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kinfer.api.loadexperiment import SLO

#: The percentile a ``p99Ms`` objective bounds.
P99 = 99.0

#: ``latency_at(q)``: the q-th percentile (0-100) of the successful requests' latency, ms (None: unknown).
LatencyAt = Callable[[float], float | None]


@dataclass(frozen=True)
class Verdict:
    """Whether the SLO was met, and a sentence saying why (for conditions and terminal output).

    The sentence always ends with the success rate (completed / offered), beside the latency verdict.
    """

    met: bool
    reason: str
    message: str
    #: completed / offered (offered = sent + dropped); None when nothing was offered.
    success_rate: float | None = None


def failure_adjusted_percentile(q: float, offered: int, completed: int) -> float | None:
    """The percentile of the *successes* that is the q-th percentile of every *offered* request, when
    each failed or dropped request counts as slower than any success; None when the failures alone
    reach past the q-th percentile (more than ``100 - q`` % of the offered requests failed).

    With 1000 offered and 995 completed, the p99 of all requests is the 99.5th percentile of the
    successes; with 980 completed there is no bound a p99 can meet.
    """
    if offered <= 0 or completed <= 0:
        return None
    adjusted = q * offered / completed
    return None if adjusted > 100.0 + 1e-9 else min(adjusted, 100.0)


def latency_from_summary(latency: Mapping[str, Any] | None) -> LatencyAt:
    """A ``latency_at`` from a summary's ``latencyMs`` {p50, p90, p99, p999, max}: the smallest listed
    percentile at or above the one asked for (so an SLO judged from it is never judged too kindly)."""
    points: list[tuple[float, float]] = []
    for key, q in (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p999", 99.9), ("max", 100.0)):
        value = (latency or {}).get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            points.append((q, float(value)))

    def at(q: float) -> float | None:
        return next((v for p, v in points if p >= q - 1e-9), None)

    return at


def success_text(completed: int, offered: int) -> str:
    """``success rate 99.50% (995 of 1000 offered)``: the sentence every verdict ends with."""
    if offered <= 0:
        return "success rate - (nothing offered)"
    return f"success rate {completed / offered:.2%} ({completed} of {offered} offered)"


def evaluate(
    slo: SLO | None,
    p99_ms: float | None,
    sent: int,
    completed: int,
    dropped: int = 0,
    *,
    latency_at: LatencyAt | None = None,
) -> Verdict:
    """Compare whole-run p99 (from the scheduled time) and the success rate with the objective.

    The success rate is completed / offered, offered = sent + dropped: a request the generator had to
    drop at ``maxInFlight`` is a request the service did not serve. A failed or dropped request counts
    as slower than any latency bound, so more than 1% of the offered requests failing or dropped fails
    a p99 objective whatever the successes' p99; below that, the p99 judged is the successes'
    percentile that the failures push it to (``latency_at``, when the caller has the distribution;
    ``p99_ms``, the successes' p99, otherwise). No SLO set counts as met; a run that sent nothing cannot
    meet a success-rate or latency objective.
    """
    offered = sent + dropped
    success = completed / offered if offered else None
    rate = success_text(completed, offered)
    if slo is None or (slo.p99_ms is None and slo.min_success_rate is None):
        return Verdict(True, "NoSLO", f"no SLO set; {rate}", success)
    failures: list[str] = []
    passes: list[str] = []
    failed = max(offered - completed, 0)
    if slo.p99_ms is not None:
        q = failure_adjusted_percentile(P99, offered, completed)
        p99 = None if q is None else (latency_at(q) if latency_at is not None else p99_ms)
        counted = ""
        if failed:
            counted = f" ({failed} failed or dropped counted above it)"
            if latency_at is None:
                counted = f" (successes; {failed} failed or dropped within the 1% a p99 leaves)"
        if offered == 0 or completed == 0 or (q is not None and p99 is None):
            failures.append("no latency measured")
        elif q is None:
            failures.append(
                f"p99 over {slo.p99_ms:g} ms: {failed} of {offered} requests failed or were dropped "
                f"({failed / offered:.2%}), more than the 1% a p99 leaves"
            )
        elif p99 is not None and p99 > slo.p99_ms:
            failures.append(f"p99 {p99:.1f} ms > {slo.p99_ms:g} ms{counted}")
        elif p99 is not None:
            passes.append(f"p99 {p99:.1f} ms <= {slo.p99_ms:g} ms{counted}")
    if slo.min_success_rate is not None:
        value = success or 0.0
        if value < slo.min_success_rate:
            failures.append(f"success rate {value:.2%} < {slo.min_success_rate:.2%}")
        else:
            passes.append(f"success rate {value:.2%} >= {slo.min_success_rate:.2%}")
    met = not failures
    said = "; ".join(failures if failures else passes)
    return Verdict(met, "SLOMet" if met else "SLOViolated", f"{said}; {rate}", success)


def capacity_verdict(capacity: Mapping[str, Any]) -> Verdict:
    """Capacity mode's verdict from a generator's ``capacity`` {rps, p99Ms, probes}: met when some rate
    at or above ``minRPS`` meets the SLO."""
    rps = capacity.get("rps")
    if rps is None:
        probes = capacity.get("probes") or []
        why = f"the lowest rate fails the SLO ({probes[0].get('message')})" if probes else "no probe completed"
        return Verdict(False, "NoCapacity", f"no capacity: {why}")
    return Verdict(True, "CapacityFound", f"capacity {float(rps):g} rps at p99 {capacity.get('p99Ms')} ms")
