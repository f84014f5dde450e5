"""The generator's view of the target's resources: real ``kinfer serve`` exposition text (gunicorn's
multiprocess aggregate, one series per worker ``pid``) parsed, CPU counters turned into cores between
two scrapes, memory summed, GPUs (through a fake NVML at the library boundary) averaged and summed; a
failed scrape leaves an interval empty, never zero."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from kinfer.api.schedule import Stage
from kinfer.loadgen.engine import Snapshot
from kinfer.loadgen.plan import RatePlan
from kinfer.loadgen.recorder import Recorder
from kinfer.loadgen.server_resources import (
    EMPTY,
    MIB,
    PodReading,
    ScrapeError,
    ServerResources,
    ServerScraper,
    combine,
    parse_metrics,
    validate_urls,
)
from kinfer.loadgen.stats import Bucket
from kinfer.server.metrics import ServerMetrics
from kinfer.server.nvml import GpuSampler
from tests.unit.server.test_nvml import FakeNvml

#: ``GET /metrics`` of ``kinfer serve --format null --workers 2`` (multiprocess mode), trimmed to a few
#: families: the workers' gauges are ``liveall`` (one series per worker pid).
SERVED = """\
# HELP kinfer_server_requests_total Multiprocess metric
# TYPE kinfer_server_requests_total counter
kinfer_server_requests_total{code="200",route="/gpu"} 242.0
# HELP kinfer_server_worker_cpu_seconds CPU time (user+system) used by each worker process.
# TYPE kinfer_server_worker_cpu_seconds gauge
kinfer_server_worker_cpu_seconds{pid="8355"} %(cpu_a)s
kinfer_server_worker_cpu_seconds{pid="8356"} %(cpu_b)s
# HELP kinfer_server_worker_resident_memory_bytes Resident memory of each worker process.
# TYPE kinfer_server_worker_resident_memory_bytes gauge
kinfer_server_worker_resident_memory_bytes{pid="8355"} 5.3620736e+07
kinfer_server_worker_resident_memory_bytes{pid="8356"} 5.3817344e+07
# HELP kinfer_server_requests_in_flight Multiprocess metric
# TYPE kinfer_server_requests_in_flight gauge
kinfer_server_requests_in_flight 1.0
"""


def served(cpu_a: float, cpu_b: float) -> str:
    return SERVED % {"cpu_a": repr(cpu_a), "cpu_b": repr(cpu_b)}


def with_gpus(visible: str) -> str:
    """A server's own exposition with a fake three-GPU node (utilization 10/55/90 %, 1/3/5 GiB)."""
    gpus = GpuSampler(FakeNvml(), env={"CUDA_VISIBLE_DEVICES": visible})
    metrics = ServerMetrics("m", registry=CollectorRegistry(), gpus=gpus)
    metrics.sample_process()
    return generate_latest(metrics.registry).decode()


def test_the_multiprocess_exposition_gives_each_workers_cpu_and_the_memory_sum() -> None:
    reading = parse_metrics(served(0.23, 0.21000000000000002), at=5.0)
    assert reading.cpu_seconds == {"8355": 0.23, "8356": 0.21000000000000002}
    assert reading.memory_bytes == 5.3620736e07 + 5.3817344e07
    assert reading.gpus == {} and reading.at == 5.0


def test_cpu_is_the_workers_seconds_per_second_between_two_scrapes() -> None:
    before = {"http://a/metrics": parse_metrics(served(1.0, 2.0), at=10.0)}
    after = {"http://a/metrics": parse_metrics(served(1.5, 2.25), at=11.0)}
    resources = combine(before, after)
    assert resources.cpu_cores == pytest.approx(0.75)
    assert resources.memory_mb == pytest.approx((5.3620736e07 + 5.3817344e07) / MIB)
    # no GPU: empty, not zero
    assert resources.gpu_util_pct is None and resources.gpu_memory_mb is None
    # over two seconds the same work is half the cores
    later = {"http://a/metrics": parse_metrics(served(1.5, 2.25), at=12.0)}
    assert combine(before, later).cpu_cores == pytest.approx(0.375)


def test_a_worker_seen_first_or_restarted_adds_from_its_next_scrape_and_pods_add_up() -> None:
    before = {
        "http://a/metrics": PodReading(0.0, {"1": 4.0}, 100.0),
        "http://b/metrics": PodReading(0.0, {"7": 1.0, "8": 9.0}, 100.0),
    }
    after = {
        "http://a/metrics": PodReading(2.0, {"1": 5.0, "2": 30.0}, 100.0),  # pid 2 is new
        "http://b/metrics": PodReading(1.0, {"7": 1.5, "8": 0.1}, 100.0),  # pid 8 went backwards: reused
    }
    assert combine(before, after).cpu_cores == pytest.approx(1.0 / 2.0 + 0.5 / 1.0)
    # the first scrape of a pod: memory known, CPU not yet
    first = combine({}, after)
    assert first.cpu_cores is None and first.memory_mb == pytest.approx(200.0 / MIB)
    assert combine({}, {}) == EMPTY


def test_gpus_through_nvml_are_averaged_in_percent_and_their_memory_summed() -> None:
    two = parse_metrics(served(1.0, 1.0) + with_gpus("0,2"), at=1.0)
    assert two.gpus == {"0": (0.1, float(1 << 30)), "2": (0.9, float(5 << 30))}
    one = parse_metrics(served(1.0, 1.0) + with_gpus("1"), at=1.0)
    resources = combine({}, {"http://10.0.0.1:5000/metrics": two, "http://10.0.0.2:5000/metrics": one})
    assert resources.gpu_util_pct == pytest.approx((10 + 90 + 55) / 3)
    assert resources.gpu_memory_mb == pytest.approx(1024 + 5 * 1024 + 3 * 1024)
    # replicas on one machine see the same GPU: counted once
    same_host = combine({}, {"http://127.0.0.1:5001/metrics": one, "http://127.0.0.1:5002/metrics": one})
    assert same_host.gpu_util_pct == pytest.approx(55.0) and same_host.gpu_memory_mb == pytest.approx(3 * 1024)


def test_text_that_is_not_a_kinfer_servers_metrics_is_refused() -> None:
    with pytest.raises(ScrapeError, match="not Prometheus text"):
        parse_metrics("<html>hello</html>\n", at=0.0)
    with pytest.raises(ScrapeError, match="not a kinfer model server"):
        parse_metrics("# TYPE up gauge\nup 1.0\n", at=0.0)


def test_record_fields_are_rounded_and_empty_as_null() -> None:
    assert ServerResources(0.12345, 102.345, None, None).to_json() == {
        "serverCPU": 0.123, "serverMemoryMB": 102.3, "serverGPUUtil": None, "serverGPUMemoryMB": None,
    }  # fmt: skip


def test_urls_are_checked() -> None:
    assert validate_urls("http://a:5000/metrics, http://b:5000/metrics,") == ["http://a:5000/metrics",
                                                                                "http://b:5000/metrics"]  # fmt: skip
    assert validate_urls(["http://a/metrics", "http://a/metrics"]) == ["http://a/metrics"]
    bad: list[Any] = [["ftp://a/metrics"], ["http://a:99999/metrics"], [3], ["nothing"], {"urls": []}]
    for value in bad:
        with pytest.raises(ValueError):
            validate_urls(value)


class Pods:
    """A test double for the HTTP fetch: each URL answers the next text of its script, or raises."""

    def __init__(self, script: dict[str, list[str | Exception]]) -> None:
        self.script = script

    async def __call__(self, url: str, timeout: float) -> str:  # noqa: ASYNC109 - the fetch's signature
        answer = self.script[url].pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


def scraper_with(script: dict[str, list[str | Exception]], times: list[float]) -> ServerScraper:
    clock: Callable[[], float] = lambda: times.pop(0)  # noqa: E731
    return ServerScraper(list(script), 1.0, fetch=Pods(script), clock=clock)


def test_a_failed_scrape_empties_its_interval_and_the_next_measures_from_the_last_good_one() -> None:
    url = "http://pod/metrics"
    scraper = scraper_with({url: [served(1.0, 1.0), served(1.5, 1.0), TimeoutError("slow"), served(2.5, 2.0)]},
                           [0.0, 1.0, 3.0])  # fmt: skip (a fetch that fails reads no clock)
    assert run(scraper.scrape_once()).cpu_cores is None  # the baseline
    assert run(scraper.scrape_once()).cpu_cores == pytest.approx(0.5)
    assert scraper.take().cpu_cores == pytest.approx(0.5)
    assert scraper.take() == EMPTY  # one record per scrape: never the same interval twice
    assert run(scraper.scrape_once()) == EMPTY and "slow" in (scraper.last_error or "")
    assert scraper.take().memory_mb is None  # empty, not zero
    assert run(scraper.scrape_once()).cpu_cores == pytest.approx((1.0 + 1.0) / 2.0)
    assert scraper.last_error is None


def test_one_pod_failing_empties_the_interval_and_new_urls_take_over() -> None:
    a, b = "http://a/metrics", "http://b/metrics"
    scraper = scraper_with({a: [served(1.0, 1.0), served(2.0, 1.0)], b: [served(1.0, 1.0), ScrapeError("HTTP 503")]},
                           [0.0, 0.0, 1.0, 1.0])  # fmt: skip
    run(scraper.scrape_once())
    assert run(scraper.scrape_once()) == EMPTY and "HTTP 503" in (scraper.last_error or "")
    scraper.set_urls([])
    assert run(scraper.scrape_once()) == EMPTY


def test_records_carry_the_servers_numbers_and_stages_average_those_that_have_them() -> None:
    plan = RatePlan([Stage(rps=10, duration="2s"), Stage(rps=20, duration="2s")], loop=False, end=4.0)
    recorder = Recorder(plan, interval=1.0, window=5)
    given = [ServerResources(1.0, 100.0, None, None), EMPTY, ServerResources(3.0, 300.0, 50.0, 2048.0),
             ServerResources(5.0, 500.0, None, None)]  # fmt: skip
    recorder.resources = lambda: given[len(recorder.records)]
    for i in range(4):
        bucket = Bucket()
        bucket.sent = 10
        snap = Snapshot(index=i, duration=1.0, target_rps=10.0, in_flight=0, buckets={i // 2: bucket}, final=i == 3)
        recorder.add(0, snap)
    rows = [r.to_json() for r in recorder.records]
    assert [r["serverCPU"] for r in rows] == [1.0, None, 3.0, 5.0]
    assert rows[1]["serverMemoryMB"] is None and rows[2]["serverGPUUtil"] == 50.0
    assert recorder.server_summary() == {"cpu": 3.0, "memoryMB": 300.0, "gpuUtil": 50.0, "gpuMemoryMB": 2048.0}
    stages = recorder.stage_summaries()
    assert stages[0]["server"] == {"cpu": 1.0, "memoryMB": 100.0, "gpuUtil": None, "gpuMemoryMB": None}
    assert stages[1]["server"] == {"cpu": 4.0, "memoryMB": 400.0, "gpuUtil": 50.0, "gpuMemoryMB": 2048.0}


def test_the_generator_reads_the_names_the_server_exports() -> None:
    from kinfer.loadgen import server_resources as scraped
    from kinfer.server import metrics as exported

    for name in ("CPU_SECONDS", "MEMORY_BYTES", "GPU_UTILIZATION", "GPU_MEMORY"):
        assert getattr(scraped, name) == getattr(exported, name)
