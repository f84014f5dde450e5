"""Pure functions from the generators' ``GET /api/status`` snapshots to a LoadExperiment status patch.

With ``parallelism`` > 1 the snapshots of every generator pod are merged: counts and rates add up;
latency percentiles of the merged set are not derivable from percentiles, so the largest pod value is
reported (an upper bound; each pod's full histogram stays in its results directory).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kinfer import histograms
from kinfer.api.loadexperiment import RECORD_COLUMNS, SLO
from kinfer.api.slo import Verdict, capacity_verdict, evaluate, latency_from_summary

_SUMS = ("targetRPS", "realRPS", "realQPS", "errors", "dropped", "avgRPS", "avgQPS")
_MAXES = ("p50Ms", "p99Ms", "maxMs", "avg99thMs")
#: The target's resources in a record: every generator pod samples the same target, so the pods'
#: values are the same measurement (the largest is kept), never added up.
_SERVER = ("serverCPU", "serverMemoryMB", "serverGPUUtil", "serverGPUMemoryMB")
_TOTALS = ("sent", "completed", "errors", "dropped")
_PERCENTILES = ("p50", "p90", "p99", "p999", "max", "mean")


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _sum(values: Sequence[Any]) -> float | None:
    nums = [v for v in map(_num, values) if v is not None]
    return round(sum(nums), 3) if nums else None


def _max(values: Sequence[Any]) -> float | None:
    nums = [v for v in map(_num, values) if v is not None]
    return max(nums) if nums else None


def merged_phase(phases: Sequence[str | None]) -> str | None:
    """One phase for all generator pods: any failure fails, any still running keeps it running."""
    known = [p for p in phases if p]
    if not known:
        return None
    if "Failed" in known:
        return "Failed"
    if "Running" in known or "Pending" in known:
        return "Running" if "Running" in known else "Pending"
    if "Stopped" in known:
        return "Stopped"
    return "Succeeded"


def merge_stages(per_pod: Sequence[Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """Per-stage summaries added up across pods (index by index)."""
    by_index: dict[int, list[Mapping[str, Any]]] = {}
    for stages in per_pod:
        for stage in stages:
            by_index.setdefault(int(stage.get("index", 0)), []).append(stage)
    out = []
    for index in sorted(by_index):
        parts = by_index[index]
        sent = int(_sum([p.get("sent") for p in parts]) or 0)
        completed = int(_sum([p.get("completed") for p in parts]) or 0)
        latency = {
            k: v for k in _PERCENTILES if (v := _max([(p.get("latencyMs") or {}).get(k) for p in parts])) is not None
        }
        row: dict[str, Any] = {
            "index": index,
            "rps": _sum([p.get("rps") for p in parts]),
            "concurrency": _sum([p.get("concurrency") for p in parts]),
            "requestsPerS": _sum([p.get("requestsPerS") for p in parts]),
            "imagesPerS": _sum([p.get("imagesPerS") for p in parts]),
            "durationS": _max([p.get("durationS") for p in parts]),
            "sent": sent,
            "completed": completed,
            "errors": int(_sum([p.get("errors") for p in parts]) or 0),
            "dropped": int(_sum([p.get("dropped") for p in parts]) or 0),
            "latencyMs": latency,
            "serviceRate": round(completed / sent, 4) if sent else None,
            "server": _server([p.get("server") for p in parts]),
        }
        if row["concurrency"] is not None:
            row["concurrency"] = int(row["concurrency"])
        out.append({k: v for k, v in row.items() if v is not None})
    return out


def _server(parts: Sequence[Any]) -> dict[str, float] | None:
    """A stage's server resources across generators: every generator reads the same target's pods, so
    each figure is taken once (the largest reading), never added up; ``None`` when none was measured."""
    keys = ("cpu", "memoryMB", "gpuUtil", "gpuMemoryMB")
    out = {k: v for k in keys if (v := _max([p.get(k) for p in parts if isinstance(p, Mapping)])) is not None}
    return out or None


def _weighted_mean(parts: Sequence[tuple[Any, Any]]) -> float | None:
    """Mean of means weighted by counts: exact for the union of the parts."""
    pairs = [(float(m), int(n)) for m, n in parts if isinstance(m, int | float) and isinstance(n, int) and n > 0]
    total = sum(n for _, n in pairs)
    return round(sum(m * n for m, n in pairs) / total, 3) if total else None


def exact_latency(out: dict[str, Any], snapshots: Sequence[Mapping[str, Any]]) -> None:
    """Whole-run and per-stage percentiles from the pods' histograms added up (not the worst pod's).

    Used when every pod sent ``histograms`` (``GET /api/status?histograms=1``); otherwise the merged
    snapshot keeps the worst pod's percentiles, an upper bound.
    """
    hists: list[Mapping[str, Any]] = []
    for snapshot in snapshots:
        h = snapshot.get("histograms")
        if not isinstance(h, Mapping) or not isinstance(h.get("latency"), str):
            return
        hists.append(h)
    whole = histograms.percentiles_ms(histograms.merge([h["latency"] for h in hists]))
    mean = _weighted_mean([((s.get("latencyMs") or {}).get("mean"), s.get("completed")) for s in snapshots])
    out["latencyMs"] = {**whole, **({"mean": mean} if mean is not None else {})}
    for stage in out["stages"]:
        key = str(stage["index"])
        encoded = [str(h["stages"][key]) for h in hists if key in (h.get("stages") or {})]
        if encoded:
            stage["latencyMs"] = histograms.percentiles_ms(histograms.merge(encoded))


def merge(snapshots: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One generator-like snapshot from several pods' ``/api/status``."""
    if len(snapshots) == 1:
        return dict(snapshots[0])
    out: dict[str, Any] = {"phase": merged_phase([s.get("phase") for s in snapshots])}
    for key in _SUMS:
        out[key] = _sum([s.get(key) for s in snapshots])
    for key in (*_MAXES, *_SERVER):
        out[key] = _max([s.get(key) for s in snapshots])
    avg_rps, avg_qps = out.get("avgRPS"), out.get("avgQPS")
    out["serviceRate"] = round(avg_qps / avg_rps, 4) if avg_rps and avg_qps is not None else None
    totals = {k: int(_sum([(s.get("totals") or s).get(k) for s in snapshots]) or 0) for k in _TOTALS}
    out.update(totals)
    out["totals"] = totals
    out["stages"] = merge_stages([s.get("stages") or [] for s in snapshots])
    exact_latency(out, snapshots)
    starts = sorted(str(s["startedAt"]) for s in snapshots if s.get("startedAt"))
    out["startedAt"] = starts[0] if starts else None
    stage_refs = [s["stage"] for s in snapshots if s.get("stage")]
    if stage_refs:
        first = stage_refs[0]
        out["stage"] = {**first, "rps": _sum([r.get("rps") for r in stage_refs])}
        clients = _sum([r.get("concurrency") for r in stage_refs])
        if clients is not None:
            out["stage"]["concurrency"] = int(clients)
    clients_now = _sum([s.get("concurrency") for s in snapshots])
    if clients_now is not None:
        out["concurrency"] = int(clients_now)
    lives = [s["live"] for s in snapshots if s.get("live")]
    if lives:
        out["live"] = {"t": _max([v.get("t") for v in lives]) or 0.0} | {
            k: out.get(k) for k in (*_SUMS, *_MAXES, "serviceRate", *_SERVER)
        }
    errors = [str(s["error"]) for s in snapshots if s.get("error")]
    if errors:
        out["error"] = "; ".join(errors)
    return out




def live_status(snapshot: Mapping[str, Any]) -> dict[str, Any]:
    """The status fields a running experiment refreshes every record interval."""
    live = snapshot.get("live")
    sr = _num(snapshot.get("serviceRate"))
    status: dict[str, Any] = {
        "targetRPS": _num(snapshot.get("targetRPS")),
        "avgRPS": _num(snapshot.get("avgRPS")),
        "avgQPS": _num(snapshot.get("avgQPS")),
        "serviceRate": sr,
        "serviceRatePercent": None if sr is None else round(sr * 100, 2),
        "avg99thMs": _num(snapshot.get("avg99thMs")),
        "concurrency": int(c) if (c := _num(snapshot.get("concurrency"))) is not None else None,
        "stage": _stage_ref(snapshot.get("stage")),
        "stages": list(snapshot.get("stages") or []),
    }
    totals = snapshot.get("totals") or snapshot
    for key in _TOTALS:
        value = totals.get(key)
        status[key] = int(value) if isinstance(value, int | float) else None
    if isinstance(live, Mapping):
        status["live"] = {k: live[k] for k in RECORD_COLUMNS if live.get(k) is not None}
    latency = snapshot.get("latencyMs")
    if isinstance(latency, Mapping):
        status["latencyMs"] = {k: latency[k] for k in _PERCENTILES if _num(latency.get(k)) is not None}
    capacity = snapshot.get("capacity")
    if isinstance(capacity, Mapping):
        status["capacity"] = capacity_status(capacity)
    if snapshot.get("startedAt"):
        status["startedAt"] = snapshot["startedAt"]
    return status


def _stage_ref(stage: Any) -> dict[str, Any] | None:
    if not isinstance(stage, Mapping) or "index" not in stage:
        return None
    return {k: stage[k] for k in ("index", "rps", "concurrency", "endsAt") if stage.get(k) is not None}


def whole_run_p99(snapshot: Mapping[str, Any]) -> float | None:
    """The whole-run p99 when the generator reports it, else the worst stage's p99 (an upper bound)."""
    latency = snapshot.get("latencyMs")
    if isinstance(latency, Mapping) and _num(latency.get("p99")) is not None:
        return _num(latency.get("p99"))
    return _max([(s.get("latencyMs") or {}).get("p99") for s in snapshot.get("stages") or []])


def capacity_status(capacity: Mapping[str, Any]) -> dict[str, Any]:
    """The declared part of a generator's ``capacity`` (the CRD schema prunes the rest)."""
    probes = [
        {k: p[k] for k in ("rps", "p99Ms", "serviceRate") if p.get(k) is not None}
        for p in capacity.get("probes") or []
        if isinstance(p, Mapping)
    ]
    out = {k: capacity[k] for k in ("rps", "p99Ms") if capacity.get(k) is not None}
    return {**out, "probes": probes}


def verdict(slo: SLO | None, snapshot: Mapping[str, Any]) -> Verdict:
    """The SLO verdict of a finished run (offered = sent + dropped, as the generator counts it); in
    capacity mode, whether a rate meeting the SLO was found."""
    capacity = snapshot.get("capacity")
    if isinstance(capacity, Mapping):
        return capacity_verdict(capacity)
    totals = snapshot.get("totals") or snapshot
    sent, dropped, completed = (int(totals.get(k) or 0) for k in ("sent", "dropped", "completed"))
    latency = snapshot.get("latencyMs")
    at = latency_from_summary(latency) if isinstance(latency, Mapping) else None
    return evaluate(slo, whole_run_p99(snapshot), sent, completed, dropped, latency_at=at)


def summary(snapshot: Mapping[str, Any], slo: SLO | None, url: str | None) -> dict[str, Any]:
    """``summary.json`` as the operator stores it in ``<name>-results`` (DESIGN §9 field names)."""
    v = verdict(slo, snapshot)
    totals = snapshot.get("totals") or snapshot
    return {
        "url": url,
        "phase": snapshot.get("phase"),
        "startedAt": snapshot.get("startedAt"),
        "finishedAt": snapshot.get("finishedAt"),
        **{k: totals.get(k) for k in _TOTALS},
        "latencyMs": {"p99": whole_run_p99(snapshot)},
        "stages": list(snapshot.get("stages") or []),
        **({"capacity": capacity_status(c)} if isinstance(c := snapshot.get("capacity"), Mapping) else {}),
        "slo": {
            "p99Ms": slo.p99_ms if slo else None,
            "minSuccessRate": slo.min_success_rate if slo else None,
            "met": v.met,
            "successRate": v.success_rate,
            "message": v.message,
        },
    }
