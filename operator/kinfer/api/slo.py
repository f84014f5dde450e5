"""Judge measured results against a LoadExperiment's SLO — one rule for the operator, local mode and CLI."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kinfer.api.loadexperiment import SLO


@dataclass(frozen=True)
class Verdict:
    """Whether the SLO was met, and a sentence saying why (for conditions and terminal output)."""

    met: bool
    reason: str
    message: str


def evaluate(slo: SLO | None, p99_ms: float | None, sent: int, completed: int, dropped: int = 0) -> Verdict:
    """Compare whole-run p99 (from the scheduled time) and the success rate with the objective.

    The success rate is completed / offered, offered = sent + dropped: a request the generator had to
    drop at ``maxInFlight`` is a request the service did not serve. No SLO set counts as met; a run
    that sent nothing cannot meet a success-rate or latency objective.
    """
    if slo is None or (slo.p99_ms is None and slo.min_success_rate is None):
        return Verdict(True, "NoSLO", "no SLO set")
    failures: list[str] = []
    passes: list[str] = []
    offered = sent + dropped
    success = completed / offered if offered else 0.0
    if slo.p99_ms is not None:
        if p99_ms is None or sent == 0:
            failures.append("no latency measured")
        elif p99_ms > slo.p99_ms:
            failures.append(f"p99 {p99_ms:.1f} ms > {slo.p99_ms:g} ms")
        else:
            passes.append(f"p99 {p99_ms:.1f} ms <= {slo.p99_ms:g} ms")
    if slo.min_success_rate is not None:
        if success < slo.min_success_rate:
            failures.append(f"success rate {success:.2%} < {slo.min_success_rate:.2%}")
        else:
            passes.append(f"success rate {success:.2%} >= {slo.min_success_rate:.2%}")
    if failures:
        return Verdict(False, "SLOViolated", "; ".join(failures))
    return Verdict(True, "SLOMet", "; ".join(passes))


def capacity_verdict(capacity: Mapping[str, Any]) -> Verdict:
    """Capacity mode's verdict from a generator's ``capacity`` {rps, p99Ms, probes}: met when some rate
    at or above ``minRPS`` meets the SLO."""
    rps = capacity.get("rps")
    if rps is None:
        probes = capacity.get("probes") or []
        why = f"the lowest rate fails the SLO ({probes[0].get('message')})" if probes else "no probe completed"
        return Verdict(False, "NoCapacity", f"no capacity: {why}")
    return Verdict(True, "CapacityFound", f"capacity {float(rps):g} rps at p99 {capacity.get('p99Ms')} ms")
