"""The operator's copy of a run's results: records pulled every interval, the summary at the end.

The daemon of a running experiment calls :meth:`ResultsKeeper.pull` once per record interval: it asks
each generator for the records it has not stored yet (``GET /api/records?since=N``, N per completion
index, recovered from the stored chunks after an operator restart), and writes them with the
generator's latest summary in ONE ConfigMap write (layout: :mod:`kinfer.stored_results`). At the end
:func:`final_summary` builds ``summary.json`` in DESIGN.md §9's shape from the generators' own final
summaries when they answer, or else from what was stored, saying so.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from kinfer import histograms, stored_results
from kinfer.api import LoadExperiment
from kinfer.controller import lexp_build as build
from kinfer.controller import lexp_status as merge
from kinfer.controller.generator import Generators, Unreachable
from kinfer.controller.kube import CONFIGMAP, Kube

log = logging.getLogger("kinfer.operator.results")

_TOTALS = ("sent", "completed", "errors", "dropped")


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _worst(parts: Sequence[Mapping[str, Any] | None]) -> dict[str, float]:
    """Per-percentile largest value across pods (an upper bound of the merged percentile)."""
    out: dict[str, float] = {}
    for part in parts:
        for key, value in (part or {}).items():
            v = _num(value)
            if v is not None and key != "mean":
                out[key] = max(out.get(key, v), v)
    return out


def _mean(parts: Sequence[tuple[Mapping[str, Any] | None, Any]]) -> float | None:
    pairs = [
        (m, n) for p, n in parts if (m := _num((p or {}).get("mean"))) is not None and isinstance(n, int) and n > 0
    ]
    total = sum(n for _, n in pairs)
    return round(sum(m * n for m, n in pairs) / total, 3) if total else None


def merge_summaries(
    summaries: Sequence[Mapping[str, Any]], hists: Sequence[Mapping[str, Any]] | None = None
) -> dict[str, Any]:
    """One summary.json from several generator pods' summaries.

    Counts add up; ``durationS`` is the longest pod's and ``achievedRPS`` the total sent over it.
    Percentiles (whole run, service time, send lag, each stage) come from the pods' histograms added up
    when every pod handed them out (``hists``: ``GET /api/status?histograms=1``), which is exact;
    otherwise each is the largest pod's value, an upper bound, and ``percentiles`` says so.
    """
    if len(summaries) == 1:
        return dict(summaries[0])
    first = summaries[0]
    out: dict[str, Any] = {k: v for k, v in first.items() if k not in ("stages", "slo")}
    out["phase"] = merge.merged_phase([s.get("phase") for s in summaries])
    for key in _TOTALS:
        out[key] = int(sum(_num(s.get(key)) or 0 for s in summaries))
    duration = max((_num(s.get("durationS")) or 0.0 for s in summaries), default=0.0)
    out["durationS"] = duration
    out["achievedRPS"] = round(out["sent"] / duration, 3) if duration > 0 else 0.0
    offered = out["sent"] + out["dropped"]
    out["successRate"] = round(out["completed"] / offered, 5) if offered else None
    out["records"] = max(int(_num(s.get("records")) or 0) for s in summaries)
    out["generators"] = len(summaries)
    starts = sorted(str(s["startedAt"]) for s in summaries if s.get("startedAt"))
    ends = sorted(str(s["finishedAt"]) for s in summaries if s.get("finishedAt"))
    out["startedAt"], out["finishedAt"] = (starts[0] if starts else None), (ends[-1] if ends else None)
    errors = [str(s["error"]) for s in summaries if s.get("error")]
    out["error"] = "; ".join(errors) or None
    req = [v for s in summaries if (v := _num((s.get("throughput") or {}).get("requestsPerS"))) is not None]
    img = [v for s in summaries if (v := _num((s.get("throughput") or {}).get("imagesPerS"))) is not None]
    out["throughput"] = {"requestsPerS": round(sum(req), 3), "imagesPerS": round(sum(img), 3)}
    out["stages"] = merge.merge_stages([s.get("stages") or [] for s in summaries])
    exact = bool(hists) and len(hists or []) == len(summaries) and all(
        isinstance(h.get(k), str) for h in hists or [] for k in ("latency", "service", "lag")
    )
    for key, hkey in (("latencyMs", "latency"), ("serviceTimeMs", "service"), ("sendLagMs", "lag")):
        if exact:
            value: dict[str, Any] = histograms.percentiles_ms(histograms.merge([str(h[hkey]) for h in hists or []]))
            if key == "sendLagMs":
                value = {k: value.get(k) for k in ("p50", "p99", "max")}
        else:
            value = _worst([s.get(key) for s in summaries])
        if key != "sendLagMs":
            mean = _mean([(s.get(key), s.get("completed")) for s in summaries])
            if mean is not None:
                value["mean"] = mean
        out[key] = value
    if exact:
        for stage in out["stages"]:
            key = str(stage["index"])
            encoded = [str(h["stages"][key]) for h in hists or [] if key in (h.get("stages") or {})]
            if encoded:
                mean = stage.get("latencyMs", {}).get("mean")
                stage["latencyMs"] = histograms.percentiles_ms(histograms.merge(encoded))
                if mean is not None:
                    stage["latencyMs"]["mean"] = mean
    out["percentiles"] = (
        "exact: the generators' histograms added up"
        if exact
        else "upper bound: the largest generator's percentile (their histograms were not available)"
    )
    return out


def server_resources(records: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The target's resources over the run from the records: the means of CPU (cores), memory, GPU %, GPU memory."""

    def values(key: str) -> list[float]:
        return [v for r in records if (v := _num(r.get(key))) is not None]

    cpu, mem, gpu, gmem = (values(k) for k in ("serverCPU", "serverMemoryMB", "serverGPUUtil", "serverGPUMemoryMB"))
    if not (cpu or mem or gpu or gmem):
        return None
    def mean(values: list[float], digits: int) -> float | None:
        return round(sum(values) / len(values), digits) if values else None

    # the keys and rounding of the generator's own summary.json ``server``
    return {"cpu": mean(cpu, 3), "memoryMB": mean(mem, 1), "gpuUtil": mean(gpu, 1), "gpuMemoryMB": mean(gmem, 1)}


def final_summary(
    lexp: LoadExperiment,
    phase: str,
    generator_summaries: Sequence[Mapping[str, Any]] | None,
    hists: Sequence[Mapping[str, Any]] | None,
    stored: stored_results.Stored,
    snapshot: Mapping[str, Any],
    url: str | None,
) -> tuple[dict[str, Any], str]:
    """summary.json (DESIGN §9) and where it came from (``generators`` or ``stored``).

    From the generators' own final summaries when every one answered; otherwise from the summaries
    stored with the records (their last write before they went away) and the last status numbers,
    whichever counted more."""
    source = "generators"
    parts = list(generator_summaries or [])
    if len(parts) < lexp.spec.parallelism:
        source = "stored"
        parts = [stored.summaries[g] for g in sorted(stored.summaries)]
        hists = None
    base = merge_summaries(parts) if parts else {}
    if len(parts) > 1 and source == "generators":
        base = merge_summaries(parts, hists)
    summary: dict[str, Any] = dict(base)
    totals = snapshot.get("totals") or snapshot
    if source == "stored" and int(_num(totals.get("sent")) or 0) > int(_num(summary.get("sent")) or 0):
        # the status was read after the last stored summary: its counts are newer
        for key in _TOTALS:
            summary[key] = totals.get(key)
        if snapshot.get("stages"):
            summary["stages"] = list(snapshot.get("stages") or [])
        if isinstance(snapshot.get("latencyMs"), Mapping):
            summary["latencyMs"] = dict(snapshot["latencyMs"])
    series = stored_results.merge_records([stored.series(g) for g in sorted(stored.records)]) if stored.records else []
    if not summary.get("durationS") and series:
        summary["durationS"] = _num(series[-1].get("t"))
    duration = _num(summary.get("durationS"))
    if summary.get("achievedRPS") is None:
        sent = _num(summary.get("sent")) or 0.0
        summary["achievedRPS"] = round(sent / duration, 3) if duration else 0.0
    for key in ("latencyMs", "serviceTimeMs"):
        summary.setdefault(key, {})
    summary.setdefault("sendLagMs", {})
    for key in _TOTALS:
        summary[key] = int(_num(summary.get(key)) or 0)
    summary["phase"] = phase
    summary["url"] = url or summary.get("url")
    merged_view = {**snapshot, **{k: summary.get(k) for k in (*_TOTALS, "stages", "latencyMs")}}
    merged_view.pop("totals", None)
    if isinstance(snapshot.get("capacity"), Mapping) and "capacity" not in summary:
        summary["capacity"] = dict(snapshot["capacity"])
    if isinstance(summary.get("capacity"), Mapping):
        merged_view["capacity"] = summary["capacity"]
    verdict = merge.verdict(lexp.spec.slo, merged_view)
    slo = lexp.spec.slo
    summary["slo"] = {
        "p99Ms": slo.p99_ms if slo else None,
        "minSuccessRate": slo.min_success_rate if slo else None,
        "met": verdict.met,
        "successRate": verdict.success_rate,
        "message": verdict.message,
    }
    summary["stages"] = list(summary.get("stages") or [])
    if summary.get("server") is None:
        summary["server"] = server_resources(series)
    summary.setdefault("records", len(series))  # the generators' own count, when they gave one
    summary["storedRecords"] = len(series)
    summary["generators"] = lexp.spec.parallelism
    summary["source"] = source
    return summary, source


class ResultsKeeper:
    """Pulls each generator's new records every interval and stores them (one ConfigMap write)."""

    def __init__(self, kube: Kube, lexp: LoadExperiment) -> None:
        self.kube = kube
        self.lexp = lexp
        self.stored: stored_results.Stored | None = None
        self.writes = 0

    async def recover(self) -> stored_results.Stored:
        """What is stored already (after an operator restart: where each generator's ``since`` resumes)."""
        if self.stored is None:
            chunks: list[dict[str, Any]] = []
            while True:
                name = stored_results.chunk_name(self.lexp.name, len(chunks))
                cm = await self.kube.get_owned(CONFIGMAP, self.lexp.namespace, name, self.lexp.metadata.uid)
                if cm is None:
                    break
                chunks.append(cm)
            self.stored = stored_results.read_chunks(chunks)
        return self.stored

    async def pull(
        self,
        gens: Generators,
        targets: Mapping[int, str],
        summaries: Mapping[int, Mapping[str, Any]],
        final: bool = False,
    ) -> int:
        """Fetch new records from each reachable generator and store them with ``summaries``; the
        number of records stored. A generator that does not answer keeps its ``since`` for next time."""
        stored = await self.recover()
        fresh: dict[int, list[dict[str, Any]]] = {}
        for index, url in targets.items():
            try:
                got = await gens.records(url, stored.next_index(index))
            except Unreachable as exc:
                log.debug("%s/%s: records of generator %d: %s", self.lexp.namespace, self.lexp.name, index, exc)
                continue
            records = [r for r in got.get("records") or [] if isinstance(r, dict)]
            if records:
                fresh[index] = records
        write = stored_results.plan_write(stored, fresh, summaries, final=final)
        if write is None:
            return 0
        try:
            await self.apply(write)
        except Exception:
            self.stored = None  # re-read what is really stored before the next write
            raise
        return sum(len(v) for v in fresh.values())

    async def apply(self, write: stored_results.Write) -> None:
        """Create the chunk ConfigMap, or merge-patch its keys."""
        name = stored_results.chunk_name(self.lexp.name, write.chunk)
        if write.create:
            manifest = build.build_records_configmap(self.lexp, name, write.data, write.binary)
            _, created = await self.kube.ensure(manifest)
            if created:
                self.writes += 1
                return
        patch: dict[str, Any] = {}
        if write.data:
            patch["data"] = write.data
        if write.binary:
            patch["binaryData"] = write.binary
        await self.kube.patch(CONFIGMAP, self.lexp.namespace, name, patch)
        self.writes += 1
