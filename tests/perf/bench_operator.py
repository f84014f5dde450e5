"""The operator at scale on the real control plane (run by hand; ``make bench-operator``).

    .venv/bin/python tests/perf/bench_operator.py [--experiments 50] [--steady 30] [--output FILE]

``make kube-up``'s control plane with the chart installed by Helm; ``kinfer operator`` as its own
process (clusterwide, as the chart's ServiceAccount); N LoadExperiments in one ``restricted``
namespace. Their generator pods are made by the real Job controller and bound by the real scheduler;
this script plays their kubelet (each pod Running and Ready on its own loopback address) and their
generators: ONE lightweight fake control API bound to every loopback address, answering each pod's
``GET /api/status`` with a live record whose ``t`` advances with the clock, and recording when each
pod's ``POST /api/intensity`` arrives. Measured:

- CR → Job latency: the LoadExperiment's create returned → the API server received the operator's
  create of its Job (the audit log, so this script's own load cannot skew it; p50/p99);
- ``spec.intensity`` patch → generator call latency: the merge patch returned → the fake generator
  received the new rate (p50/p99);
- status cadence per experiment: the intervals between the operator's successive status writes (each a
  new resourceVersion; their times from the audit log) during a steady window, against the 1 s record
  interval (target ±10 %);
- the operator's CPU (user+system seconds per second of the steady window) and its RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import itertools
import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import psutil
import requests
from aiohttp import web

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.cluster.live import (  # noqa: E402  (after the path set-up, when run as a script)
    NODE,
    OPERATOR_USER,
    ControlPlane,
    LiveCluster,
    OperatorProcess,
    audit_events,
    restricted_namespace,
    running_operator,
)
from tests.kube.kubectl import Kubectl  # noqa: E402

CONTROL_PORT = 18089


class FakeGenerators:
    """One control API for every generator pod; the pod is told apart by the address it was reached on."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.intensity: dict[str, float | None] = {}
        self.intensity_calls: dict[str, list[tuple[float, float | None]]] = defaultdict(list)
        self.status_calls = 0
        self.records_calls = 0

    def _ip(self, request: web.Request) -> str:
        sock = request.transport.get_extra_info("sockname") if request.transport else None
        return str(sock[0]) if sock else "?"

    async def status(self, request: web.Request) -> web.Response:
        ip = self._ip(request)
        self.status_calls += 1
        now = time.time()
        t = round(now - self.started.setdefault(ip, now), 3)
        rate = self.intensity.get(ip) or 10.0
        sent = int(t * rate)
        record = {"t": t, "targetRPS": rate, "realRPS": rate, "realQPS": rate, "errors": 0, "dropped": 0,
                  "p50Ms": 4.0, "p99Ms": 9.0, "maxMs": 12.0, "avgRPS": rate, "avgQPS": rate,
                  "serviceRate": 1.0, "avg99thMs": 9.0}
        snapshot = {**record, "phase": "Running", "live": record, "intensity": self.intensity.get(ip),
                    "sent": sent, "completed": sent, "stage": {"index": 0, "rps": 10.0},
                    "stages": [{"index": 0, "rps": 10.0, "sent": sent, "completed": sent, "errors": 0,
                                "dropped": 0, "latencyMs": {"p50": 4.0, "p99": 9.0, "max": 12.0},
                                "serviceRate": 1.0}],
                    "startedAt": datetime.datetime.fromtimestamp(self.started[ip], datetime.UTC).isoformat()}
        if request.query.get("summary") == "1":  # the full summary, stored by the operator beside the records
            snapshot["summary"] = {**{k: snapshot[k] for k in ("sent", "completed", "stages", "startedAt")},
                                   "errors": 0, "dropped": 0, "durationS": t, "achievedRPS": rate,
                                   "latencyMs": {"p50": 4.0, "p99": 9.0, "max": 12.0, "mean": 4.5},
                                   "serviceTimeMs": {"p50": 3.0, "p99": 8.0}, "sendLagMs": {"p50": 0.1, "p99": 0.5},
                                   "records": int(t)}  # fmt: skip
        return web.json_response(snapshot)

    async def records(self, request: web.Request) -> web.Response:
        """``GET /api/records?since=N``: one record per whole second since the pod's first status call."""
        ip = self._ip(request)
        self.records_calls += 1
        since = int(request.query.get("since", "0"))
        now = time.time()
        done = int(now - self.started.setdefault(ip, now))
        rate = self.intensity.get(ip) or 10.0
        records = [{"index": i, "t": float(i + 1), "targetRPS": rate, "realRPS": rate, "realQPS": rate, "errors": 0,
                    "dropped": 0, "p50Ms": 4.0, "p99Ms": 9.0, "maxMs": 12.0, "avgRPS": rate, "avgQPS": rate,
                    "serviceRate": 1.0, "avg99thMs": 9.0} for i in range(since, done)]  # fmt: skip
        return web.json_response({"records": records, "next": since + len(records), "phase": "Running"})

    async def set_intensity(self, request: web.Request) -> web.Response:
        ip = self._ip(request)
        rps = (await request.json()).get("rps")
        self.intensity[ip] = rps
        self.intensity_calls[ip].append((time.time(), rps))
        return web.json_response({"intensity": rps})

    async def stop(self, request: web.Request) -> web.Response:
        return web.json_response({"phase": "Stopped"})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/api/status", self.status)
        app.router.add_get("/api/records", self.records)
        app.router.add_post("/api/intensity", self.set_intensity)
        app.router.add_post("/api/stop", self.stop)
        return app


def percentiles(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50": None, "p99": None, "max": None}
    ordered = sorted(values)
    return {"n": len(ordered), "p50": round(statistics.median(ordered), 4),
            "p99": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 4), "max": round(ordered[-1], 4)}


async def play_kubelet(cluster: LiveCluster, gens: FakeGenerators, stop: asyncio.Event) -> None:
    """Every generator pod bound to the node gets an address of its own, Running and Ready."""
    known: set[str] = set()
    next_ip = 2
    while not stop.is_set():
        pods = await asyncio.to_thread(cluster.list, "pods")
        for pod in pods:
            uid = pod["metadata"]["uid"]
            if uid in known or pod["spec"].get("nodeName") != NODE or pod["metadata"].get("deletionTimestamp"):
                continue
            known.add(uid)
            ip = f"127.88.{next_ip // 250}.{next_ip % 250 + 2}"
            next_ip += 1
            now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            ready = [{"type": t, "status": "True", "lastTransitionTime": now} for t in ("Ready", "ContainersReady")]
            await asyncio.to_thread(cluster.patch, "pods", pod["metadata"]["name"], {"status": {
                "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "127.0.0.1",
                "conditions": ready}}, subresource="status")
        await asyncio.sleep(0.2)


def experiment(name: str) -> dict[str, Any]:
    return {"apiVersion": "kinfer.dev/v1alpha1", "kind": "LoadExperiment", "metadata": {"name": name},
            "spec": {"target": {"url": "http://127.0.0.1:9"}, "controlPort": CONTROL_PORT, "windowSize": 10,
                     "schedule": [{"rps": 10, "duration": "30m"}]}}


async def bench(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    plane = ControlPlane.up()
    plane.install_chart()
    cluster = LiveCluster(plane, Kubectl(plane.kubeconfig, workdir / "cache"))
    cluster.namespace = restricted_namespace(cluster, "kinfer-bench")
    ns = cluster.namespace
    gens = FakeGenerators()
    runner = web.AppRunner(gens.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", CONTROL_PORT).start()
    stop = asyncio.Event()
    kubelet = asyncio.create_task(play_kubelet(cluster, gens, stop))
    since = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    operator = OperatorProcess(plane.service_account_kubeconfig(workdir / "operator.kubeconfig"), ns,
                               workdir / "operator.log", 18080, env={"KINFER_OPERATOR_RESULTS_LINGER_S": "5"})
    names = [f"load-{i:03d}" for i in range(args.experiments)]
    created: dict[str, float] = {}
    try:
        async with running_operator(operator):
            proc = psutil.Process(operator.proc.pid)  # type: ignore[union-attr]
            for name in names:
                await asyncio.to_thread(cluster.create, "loadexperiments", experiment(name))
                created[name] = time.time()
            # Everything running: each experiment's status carries a live record.
            deadline = time.time() + 120
            while time.time() < deadline:
                running = [o for o in await asyncio.to_thread(cluster.list, "loadexperiments")
                           if (o.get("status") or {}).get("live")]
                if len(running) == len(names):
                    break
                await asyncio.sleep(0.5)
            else:
                raise RuntimeError(f"only {len(running)}/{len(names)} experiments running:\n{operator.tail()}")

            # Steady state: cadence and CPU.
            t0, cpu0 = time.time(), proc.cpu_times()
            await asyncio.sleep(args.steady)
            t1, cpu1 = time.time(), proc.cpu_times()
            rss_mb = proc.memory_info().rss / 2**20

            # Intensity patches, one after another, each timed to its generator call.
            patched: dict[str, float] = {}
            for i, name in enumerate(names):
                await asyncio.to_thread(cluster.patch, "loadexperiments", name, {"spec": {"intensity": 20 + i}})
                patched[name] = time.time()
            await asyncio.sleep(3)
    finally:
        stop.set()
        kubelet.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await kubelet
        await runner.cleanup()
        for obj in cluster.list("loadexperiments"):
            cluster.patch("loadexperiments", obj["metadata"]["name"], {"metadata": {"finalizers": None}})
        for pod in cluster.list("pods"):
            cluster.delete("pods", pod["metadata"]["name"], grace_period_s=0)
        cluster.delete("namespaces", ns, namespace=None)
        if plane.started_here:
            plane.down()

    def received(event: dict[str, Any]) -> float:
        return datetime.datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00")).timestamp()

    mine = [e for e in audit_events(plane, OPERATOR_USER, since) if (e.get("objectRef") or {}).get("namespace") == ns]
    job_created = {e["objectRef"]["name"].removesuffix("-loadgen"): received(e) for e in mine
                   if e["verb"] == "create" and e["objectRef"]["resource"] == "jobs"
                   and (e.get("responseStatus") or {}).get("code") == 201}
    # From the create call's return (this process) to the API server receiving the Job's create (the
    # audit log; one clock, this machine's).
    cr_to_job = [job_created[n] - created[n] for n in names if n in job_created]

    writes: dict[str, list[float]] = defaultdict(list)
    for event in mine:
        ref = event["objectRef"]
        status_write = event["verb"] == "patch" and ref["resource"] == "loadexperiments" and ref.get("subresource")
        if status_write == "status" and t0 <= (when := received(event)) <= t1:
            writes[ref["name"]].append(when)
    stored: dict[str, int] = defaultdict(int)  # the operator's copy of the records: one write per interval
    for event in mine:
        ref = event["objectRef"]
        if ref["resource"] == "configmaps" and event["verb"] in ("patch", "create") and t0 <= received(event) <= t1:
            stored[ref["name"].split("-results-")[0]] += 1
    intervals = [b - a for times in writes.values() for a, b in itertools.pairwise(times)]
    within = sum(1 for d in intervals if 0.9 <= d <= 1.1)
    per_experiment_rate = [len(times) / (t1 - t0) for times in writes.values()]

    arrivals: list[float] = []
    for name in names:
        want = 20 + names.index(name)
        calls = [t for calls in gens.intensity_calls.values() for t, rps in calls if rps == want]
        if calls:
            arrivals.append(min(calls) - patched[name])
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "experiments": len(names),
        "steadyS": round(t1 - t0, 2),
        "crToJobS": percentiles(cr_to_job),
        "intensityToGeneratorS": percentiles(arrivals),
        "statusCadence": {
            "intervalsS": percentiles(intervals),
            "meanIntervalS": round(statistics.mean(intervals), 4) if intervals else None,
            "within10Percent": round(within / len(intervals), 4) if intervals else None,
            "writesPerSecondPerExperiment": percentiles(per_experiment_rate),
        },
        "operator": {"cpuCores": round((cpu1.user + cpu1.system - cpu0.user - cpu0.system) / (t1 - t0), 3),
                     "rssMB": round(rss_mb, 1)},
        "statusCalls": gens.status_calls,
        "recordsCalls": gens.records_calls,
        "resultsWritesPerSecondPerExperiment": percentiles([stored[n] / (t1 - t0) for n in names]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=50)
    parser.add_argument("--steady", type=float, default=30.0, help="seconds of steady state measured")
    parser.add_argument("--output", type=Path, default=ROOT / "results" / "bench-operator.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "cache").mkdir()
        result = asyncio.run(bench(args, Path(tmp)))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(requests.exceptions.ChunkedEncodingError):
        raise SystemExit(main())
