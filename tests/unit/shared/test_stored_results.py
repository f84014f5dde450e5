"""The operator's stored results: records chunked into ConfigMaps (tails, gzip members, new chunks),
recovered after a restart, merged across generators, and rebuilt into a results directory."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from hdrh.histogram import HdrHistogram

from kinfer import histograms, stored_results
from kinfer.api import LoadExperiment
from kinfer.controller import results as keep
from kinfer.loadgen.recorder import Record
from kinfer.plugin_report import NoResults, load, write_directory

NAME = "bench"
UID = "u-1"


def record(index: int, rng: random.Random, rps: float = 50.0, server: bool = True) -> dict[str, Any]:
    """A record as the generator's ``GET /api/records`` hands it out."""
    p50 = rng.uniform(3, 6)
    rec = Record(
        index=index, t=float(index + 1), target_rps=rps, real_rps=rps + rng.uniform(-3, 3),
        real_qps=rps + rng.uniform(-3, 3), errors=rng.choice([0, 0, 0, 1]), dropped=0, p50_ms=p50,
        p99_ms=p50 * rng.uniform(2, 4), max_ms=p50 * rng.uniform(4, 8), avg_rps=rps, avg_qps=rps - 0.1,
        service_rate=0.998, avg99th_ms=p50 * 3, send_lag_p99_ms=rng.uniform(0.1, 2),
        service_time_p99_ms=p50 * 2, errors_by_class={"timeout": 1} if index % 7 == 0 else {},
    ).to_json()  # fmt: skip
    if server:
        rec.update(serverCPU=round(rng.uniform(0.5, 1.5), 3), serverMemoryMB=round(rng.uniform(300, 310), 1))
    return rec


class Store:
    """ConfigMaps as the API server keeps them: a create, or a JSON merge patch (``None`` deletes a key)."""

    def __init__(self) -> None:
        self.cms: dict[int, dict[str, Any]] = {}

    def apply(self, write: stored_results.Write) -> None:
        if write.create:
            assert write.chunk not in self.cms
            self.cms[write.chunk] = {
                "metadata": {"name": stored_results.chunk_name(NAME, write.chunk),
                             "ownerReferences": [{"uid": UID, "controller": True}]},
                "data": {k: v for k, v in write.data.items() if v is not None},
                "binaryData": dict(write.binary),
            }  # fmt: skip
            return
        cm = self.cms[write.chunk]
        for key, value in write.data.items():
            if value is None:
                cm["data"].pop(key, None)
            else:
                cm["data"][key] = value
        cm["binaryData"].update(write.binary)

    def chunks(self) -> list[dict[str, Any]]:
        return [self.cms[k] for k in sorted(self.cms)]


def run_ticks(store: Store, stored: stored_results.Stored, gens: int, ticks: range, rng: random.Random) -> None:
    for i in ticks:
        fresh = {g: [record(i, rng)] for g in range(gens)}
        summaries = {g: {"sent": (i + 1) * 50, "records": i + 1} for g in range(gens)}
        write = stored_results.plan_write(stored, fresh, summaries)
        assert write is not None
        store.apply(write)


def test_records_go_to_a_tail_then_into_gzip_members_and_read_back_whole() -> None:
    rng = random.Random(1)
    store, stored = Store(), stored_results.Stored()
    run_ticks(store, stored, 2, range(75), rng)
    [cm] = store.chunks()
    for g in (0, 1):
        tail = stored_results.parse_jsonl(cm["data"][stored_results.tail_key(g)])
        assert len(tail) == 75 - 2 * stored_results.TAIL_RECORDS  # 15 not compressed yet
        assert stored_results.gz_key(g, 0) in cm["binaryData"] and stored_results.gz_key(g, 30) in cm["binaryData"]
    again = stored_results.read_chunks(store.chunks())
    for g in (0, 1):
        assert [r["index"] for r in again.series(g)] == list(range(75))
        assert again.next_index(g) == 75 and again.summaries[g]["records"] == 75
    assert again.series(1) == stored.series(1)


def test_nothing_new_is_no_write_and_records_sent_twice_are_stored_once() -> None:
    rng = random.Random(2)
    stored = stored_results.Stored()
    first = [record(i, rng) for i in range(5)]
    assert stored_results.plan_write(stored, {0: first}, {}) is not None
    assert stored_results.plan_write(stored, {0: first[3:]}, {}) is None
    assert stored.next_index(0) == 5 and len(stored.tails[0]) == 5


def test_a_full_chunk_is_closed_and_the_next_one_started(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stored_results, "CHUNK_BYTES", 6000)
    rng = random.Random(3)
    store, stored = Store(), stored_results.Stored()
    run_ticks(store, stored, 1, range(400), rng)
    chunks = store.chunks()
    assert len(chunks) >= 3
    for cm in chunks[:-1]:  # closed chunks: no tail left, near the bound
        assert not cm["data"].get(stored_results.tail_key(0))
        assert stored_results.object_bytes(cm) < 6000 + 4000
    assert [r["index"] for r in stored_results.read_chunks(chunks).series(0)] == list(range(400))


def test_a_restarted_operator_resumes_where_the_stored_records_end() -> None:
    rng = random.Random(4)
    store, stored = Store(), stored_results.Stored()
    run_ticks(store, stored, 2, range(47), rng)
    resumed = stored_results.read_chunks(store.chunks())  # the operator restarts: memory gone
    assert resumed.next_index(0) == resumed.next_index(1) == 47
    run_ticks(store, resumed, 2, range(47, 88), rng)  # 28 left in each tail
    final = stored_results.plan_write(resumed, {}, {}, final=True)
    assert final is not None
    store.apply(final)
    [cm] = store.chunks()
    assert not any(cm["data"].get(stored_results.tail_key(g)) for g in (0, 1))  # all compressed at the end
    again = stored_results.read_chunks(store.chunks())
    assert [r["index"] for r in again.series(0)] == list(range(88))


def test_merged_records_add_rates_keep_the_worst_percentile_and_one_server_reading() -> None:
    a = {"index": 0, "t": 1.0, "targetRPS": 10, "realRPS": 9.5, "realQPS": 9, "errors": 1, "dropped": 0,
         "p50Ms": 3, "p99Ms": 9, "maxMs": 12, "avgRPS": 10, "avgQPS": 9, "serverCPU": 1.2,
         "errorsByClass": {"timeout": 1}}  # fmt: skip
    b = {"index": 0, "t": 1.01, "targetRPS": 10, "realRPS": 10.5, "realQPS": 10, "errors": 2, "dropped": 3,
         "p50Ms": 4, "p99Ms": 7, "maxMs": 20, "avgRPS": 10, "avgQPS": 10, "serverCPU": 1.3,
         "errorsByClass": {"timeout": 1, "http_503": 1}}  # fmt: skip
    [row] = stored_results.merge_records([[a], [b]])
    assert row["realRPS"] == 20 and row["realQPS"] == 19 and row["errors"] == 3 and row["dropped"] == 3
    assert row["p50Ms"] == 4 and row["p99Ms"] == 9 and row["maxMs"] == 20 and row["t"] == 1.01
    assert row["serviceRate"] == 0.95 and row["serverCPU"] == 1.2
    assert row["errorsByClass"] == {"timeout": 2, "http_503": 1}


def hist(values_ms: list[float]) -> str:
    h = HdrHistogram(1, 60_000_000, 3)
    for v in values_ms:
        h.record_value(int(v * 1000))
    return histograms.encode(h)


def test_merged_summaries_take_exact_percentiles_from_the_histograms() -> None:
    fast, slow = [1.0] * 990 + [2.0] * 10, [50.0] * 5
    summaries = [
        {"sent": 1000, "completed": 1000, "errors": 0, "dropped": 0, "durationS": 10.0,
         "latencyMs": {"p99": 2.0, "mean": 1.01}, "serviceTimeMs": {"p99": 2.0}, "sendLagMs": {"p99": 0.1},
         "stages": [{"index": 0, "sent": 1000, "completed": 1000, "latencyMs": {"p99": 2.0}}]},
        {"sent": 5, "completed": 5, "errors": 0, "dropped": 0, "durationS": 10.2,
         "latencyMs": {"p99": 50.0, "mean": 50.0}, "serviceTimeMs": {"p99": 50.0}, "sendLagMs": {"p99": 0.2},
         "stages": [{"index": 0, "sent": 5, "completed": 5, "latencyMs": {"p99": 50.0}}]},
    ]  # fmt: skip
    hists = [
        {"latency": hist(fast), "service": hist(fast), "lag": hist([0.1]), "stages": {"0": hist(fast)}},
        {"latency": hist(slow), "service": hist(slow), "lag": hist([0.2]), "stages": {"0": hist(slow)}},
    ]
    exact = keep.merge_summaries(summaries, hists)
    assert exact["sent"] == 1005 and exact["durationS"] == 10.2 and exact["achievedRPS"] == 98.529
    # 1005 latencies: the 99th percentile is the 995th (2 ms), not the slow pod's 50 ms
    assert exact["latencyMs"]["p99"] == pytest.approx(2.0, rel=0.01)
    assert exact["stages"][0]["latencyMs"]["p99"] == pytest.approx(2.0, rel=0.01)
    assert exact["latencyMs"]["mean"] == pytest.approx((1.01 * 1000 + 50 * 5) / 1005, abs=0.001)
    assert exact["percentiles"].startswith("exact")
    bound = keep.merge_summaries(summaries)
    assert bound["latencyMs"]["p99"] == 50.0 and bound["percentiles"].startswith("upper bound")


def lexp(parallelism: int = 1) -> LoadExperiment:
    return LoadExperiment.model_validate({
        "apiVersion": "kinfer.dev/v1alpha1", "kind": "LoadExperiment",
        "metadata": {"name": NAME, "namespace": "default", "uid": UID},
        "spec": {"target": {"url": "http://t:5000"}, "schedule": [{"rps": 50, "duration": "60s"}],
                 "parallelism": parallelism, "slo": {"p99Ms": 100}},
    })  # fmt: skip


GENERATOR_SUMMARY = {
    "sent": 3000, "completed": 2990, "errors": 10, "dropped": 0, "durationS": 60.0, "achievedRPS": 50.0,
    "latencyMs": {"p50": 4.0, "p90": 8.0, "p99": 12.0, "p999": 20.0, "max": 30.0, "mean": 5.0},
    "serviceTimeMs": {"p50": 3.0, "p99": 10.0}, "sendLagMs": {"p50": 0.1, "p99": 1.0, "max": 2.0},
    "stages": [{"index": 0, "rps": 50, "durationS": 60, "sent": 3000, "completed": 2990, "errors": 10,
                "dropped": 0, "latencyMs": {"p50": 4.0, "p99": 12.0}, "serviceRate": 0.9967}],
}  # fmt: skip


def test_a_gone_generator_leaves_a_summary_built_from_what_was_stored() -> None:
    rng = random.Random(5)
    stored = stored_results.Stored()
    stored_results.plan_write(stored, {0: [record(i, rng) for i in range(60)]}, {0: GENERATOR_SUMMARY})
    summary, source = keep.final_summary(lexp(), "Failed", None, None, stored, {"sent": 10}, "http://t:5000/gpu")
    assert source == "stored" and summary["phase"] == "Failed" and summary["sent"] == 3000
    for key in ("durationS", "achievedRPS", "latencyMs", "serviceTimeMs", "sendLagMs", "stages", "slo", "server"):
        assert summary[key], key
    assert summary["storedRecords"] == summary["records"] == 60
    assert summary["slo"]["met"] is True and "success" in summary["slo"]["message"]
    assert summary["server"]["cpu"] is not None and summary["server"]["gpuUtil"] is None  # no GPU: empty
    fresh, source = keep.final_summary(lexp(), "Succeeded", [GENERATOR_SUMMARY], None, stored, {}, None)
    assert source == "generators" and fresh["sent"] == 3000


def stored_cms(gens: int, ticks: int, summary: dict[str, Any] | None) -> list[dict[str, Any]]:
    rng = random.Random(6)
    store, stored = Store(), stored_results.Stored()
    run_ticks(store, stored, gens, range(ticks), rng)
    cms = store.chunks()
    if summary is not None:
        cms.append({"metadata": {"name": f"{NAME}-results", "ownerReferences": [{"uid": UID, "controller": True}]},
                    "data": {"summary.json": json.dumps(summary)}})  # fmt: skip
    cms.append({"metadata": {"name": f"{NAME}-results-9", "ownerReferences": [{"uid": "someone-else"}]},
                "binaryData": {stored_results.gz_key(0, 0): stored_results.compress([{"index": 0}])}})  # fmt: skip
    return cms


def experiment(phase: str) -> dict[str, Any]:
    return {"metadata": {"name": NAME, "uid": UID}, "status": {"phase": phase}}


def test_the_results_directory_is_rebuilt_from_the_stored_configmaps(tmp_path: Path) -> None:
    final = {**GENERATOR_SUMMARY, "phase": "Succeeded", "slo": {"p99Ms": 100, "met": True}}
    summary, stored, done = load(experiment("Succeeded"), stored_cms(2, 40, final))
    assert done and summary["sent"] == 3000
    write_directory(summary, stored, tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    assert {"summary.json", "records.csv", "stages.csv", "report.html", "rates.png", "latency.png",
            "records-g0.csv", "records-g1.csv"} <= names  # fmt: skip
    rows = (tmp_path / "records.csv").read_text().splitlines()
    assert len(rows) == 41 and "serverCPU" in rows[0]
    merged = dict(zip(rows[0].split(","), rows[1].split(","), strict=True))
    one = dict(zip(rows[0].split(","), (tmp_path / "records-g0.csv").read_text().splitlines()[1].split(","),
                   strict=True))  # fmt: skip
    assert float(merged["targetRPS"]) == 2 * float(one["targetRPS"])
    assert json.loads((tmp_path / "summary.json").read_text())["server"]["cpu"] > 0


def test_a_running_experiment_gives_what_is_stored_so_far(tmp_path: Path) -> None:
    pending = {"incomplete": True, "incompleteReason": "the run has not finished"}
    summary, stored, done = load(experiment("Running"), stored_cms(1, 12, pending))
    assert not done and summary["incomplete"] and "Running" in summary["incompleteReason"]
    assert summary["records"] == 12 and stored.next_index(0) == 12


def test_no_stored_results_is_an_error_naming_the_experiment() -> None:
    with pytest.raises(NoResults, match="bench has no results yet"):
        load(experiment("Pending"), [])
