"""``kinfer serve`` side by side with the model servers users would pick instead, in one run. Run by
``make bench-peers-servers`` (which installs the peers first) or by hand::

    .venv/bin/python tests/perf/bench_peer_servers.py
        [--servers kinfer,fastapi,flask,mlserver,kserve,bentoml,rayserve,torchserve]
        [--skip capacity,overhead,profile,cprofile,null]
        [--model .demo/ssdlite-person] [--probe-s 10] [--out results/bench-peers]

The same ONNX person detector (``kinfer model build ssdlite-person``) behind every server, two worker
processes each, one ONNX Runtime thread per worker, the same decoder and the same ONNX Runtime call
(tests/perf/peers/detector.py; kinfer uses its own backend, which makes that call with the same
options). Each server gets the image through its natural path: the JPEG as the body of
``POST /predict`` (kinfer, FastAPI, Flask, Ray Serve; TorchServe's ``POST /predictions/person``), the Open
Inference Protocol's JSON with one base64 BYTES input (MLServer, KServe; BentoML's JSON path, typed by
pydantic, since its file path is multipart, which kinfer's generator does not send). Two worker
processes each: gunicorn/uvicorn/KServe workers, MLServer parallel workers, BentoML service workers,
Ray Serve replicas, TorchServe backend workers (each peer's own helpers, such as Ray's GCS and
proxy or TorchServe's Java frontend, come on top and count in its memory). All servers run at once;
every measure takes them in turns (so that a shared machine's drift reaches them alike):

* **capacity**: the highest rate with p99 <= 100 ms and >= 99 % success, driven open loop by
  ``kinfer loadgen`` (Poisson, latency from the scheduled send), doubling then bisecting, the
  searches in lockstep;
* **overhead**: one request at a time over a keep-alive socket, round trip minus the bare model call
  (the ONNX Runtime call alone, timed in this process) and minus decode + call, medians over
  interleaved rounds;
* **CPU per request**: in the same rounds, the on-CPU time of each server's whole process tree (the
  scheduler's nanosecond account per thread, background threads included) over its requests: unlike
  wall time, not inflated by waiting for a core on a shared machine;
* **null block** (what each server costs beyond the model): the model call left out everywhere (kinfer
  ``--format null``, the peers' detector with ``KINFER_PEER_NULL=1``; decode kept), kinfer beside FastAPI,
  Flask and kinfer with one part taken out: its read deadline off (``--request-read-timeout 0``), its
  ``MetricsMiddleware`` out (tests/perf/peers/kinfer_variant.py, whose ``asis`` run is the control): on-CPU
  ms per request paired round by round. With the model in, each process's ONNX Runtime call runs at its
  own speed, a few per cent apart, which hides differences of this size;
* **cProfile**: kinfer's workers under cProfile with a CPU clock (``time.thread_time``): each module
  group's own CPU per request (cProfile's hooks inflate the Python-heavy groups; the ranking counts);
* **memory**: proportional set size (PSS: shared pages split among the processes that map them) of the
  server's whole process tree, divided by its worker count, after the runs.

Raw outputs go to ``--out``/servers; the table to stdout and ``--out``/servers.json.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
PEERS = Path(os.environ.get("PEERS_DIR", ROOT / ".peers"))
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "peers"))

from bench_loadgen import free_port  # noqa: E402
from bench_server import SLO, CapacitySearch, RawClient  # noqa: E402

KINFER = [sys.executable, "-m", "kinfer.cli"]
WORKERS = 2
SLO_MS = SLO["p99Ms"]  #: 100 ms, the rule of bench_server.py's CapacitySearch (shared)


@dataclass
class Peer:
    name: str
    #: raw: the JPEG as the body of POST /predict; v2: Open Inference Protocol JSON
    protocol: str
    path: str
    start: Callable[[int, Path, Path], list[str]]
    venv: Path | None = None
    files: dict[str, str] = field(default_factory=dict)
    #: environment on top of the peer's usual one (the null block's ``KINFER_PEER_NULL``)
    env: dict[str, str] = field(default_factory=dict)


def _env(peer: Peer, model: Path) -> dict[str, str]:
    env = {**os.environ, "KINFER_PEER_MODEL": str(model),
           "PYTHONPATH": os.pathsep.join([str(HERE / "peers"), str(ROOT / "operator")]), **peer.env}  # fmt: skip
    if peer.venv is not None:
        env["PATH"] = f"{peer.venv / 'bin'}{os.pathsep}{env['PATH']}"
        env.pop("VIRTUAL_ENV", None)
    return env


def kinfer_cmd(port: int, model: Path, work: Path, fmt: str = "onnx") -> list[str]:
    return [*KINFER, "serve", "--model", str(model), "--format", fmt, "--workers", str(WORKERS), "--threads", "1",
            "--intra-op-threads", "1", "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip


def kinfer_variant_cmd(variant: str, *extra: str, fmt: str = "onnx") -> Callable[[int, Path, Path], list[str]]:
    """kinfer with one per-request part taken out (tests/perf/peers/kinfer_variant.py), same flags."""

    def cmd(port: int, model: Path, work: Path) -> list[str]:
        return [sys.executable, str(HERE / "peers" / "kinfer_variant.py"), variant,
                *kinfer_cmd(port, model, work, fmt)[len(KINFER) + 1 :], *extra]  # fmt: skip

    return cmd


def kinfer_null_cmd(port: int, model: Path, work: Path) -> list[str]:
    return kinfer_cmd(port, model, work, "null")


def fastapi_cmd(port: int, model: Path, work: Path) -> list[str]:
    return [str(PEERS / "fastapi" / "bin" / "uvicorn"), "fastapi_app:app", "--workers", str(WORKERS), "--host",
            "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"]  # fmt: skip


def flask_cmd(port: int, model: Path, work: Path) -> list[str]:
    return [sys.executable, "-m", "gunicorn", "-w", str(WORKERS), "-k", "sync", "-b", f"127.0.0.1:{port}",
            "--log-level", "warning", "flask_app:app"]  # fmt: skip


def mlserver_cmd(port: int, model: Path, work: Path) -> list[str]:
    root = work / "mlserver"
    (root / "person").mkdir(parents=True, exist_ok=True)
    settings = {"http_port": port, "grpc_port": free_port(), "metrics_port": free_port(), "host": "127.0.0.1",
                "parallel_workers": WORKERS, "debug": False}  # fmt: skip
    (root / "settings.json").write_text(json.dumps(settings))
    (root / "person" / "model-settings.json").write_text(
        json.dumps({"name": "person", "implementation": "mlserver_app.PersonDetector"})
    )
    return [str(PEERS / "mlserver" / "bin" / "mlserver"), "start", str(root)]


def kserve_cmd(port: int, model: Path, work: Path) -> list[str]:
    return [str(PEERS / "kserve" / "bin" / "python"), str(HERE / "peers" / "kserve_app.py"), "--http_port", str(port),
            "--grpc_port", str(free_port()), "--workers", str(WORKERS)]  # fmt: skip


def bentoml_cmd(port: int, model: Path, work: Path) -> list[str]:
    bentoml = str(PEERS / "bentoml" / "bin" / "bentoml")
    return ["env", f"BENTO_WORKERS={WORKERS}", f"BENTOML_HOME={work / 'bentoml'}", bentoml, "serve",
            "bentoml_app:PersonService", "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip


def rayserve_cmd(port: int, model: Path, work: Path) -> list[str]:
    return [str(PEERS / "rayserve" / "bin" / "python"), str(HERE / "peers" / "rayserve_app.py"), "--port", str(port),
            "--replicas", str(WORKERS)]  # fmt: skip


def torchserve_cmd(port: int, model: Path, work: Path) -> list[str]:
    """Archives the handler (``torch-model-archiver``, unpacked: ``--archive-format no-archive``), writes
    config.properties (ports, two workers, token authorization off as on a private loopback) and starts
    the Java frontend in the foreground, its logs under ``work``."""
    root = work / "torchserve"
    store = root / "store"
    store.mkdir(parents=True, exist_ok=True)
    bin_dir = PEERS / "torchserve" / "bin"
    subprocess.run([str(bin_dir / "torch-model-archiver"), "--model-name", "person", "--version", "1.0", "--handler",
                    str(HERE / "peers" / "torchserve_handler.py"), "--extra-files", str(HERE / "peers" / "detector.py"),
                    "--export-path", str(store), "--archive-format", "no-archive", "--force"], check=True)  # fmt: skip
    config = {"inference_address": f"http://127.0.0.1:{port}", "management_address": f"http://127.0.0.1:{free_port()}",
              "metrics_address": f"http://127.0.0.1:{free_port()}", "default_workers_per_model": WORKERS,
              "model_store": store, "load_models": "person", "disable_token_authorization": "true",
              "install_py_dep_per_model": "false"}  # fmt: skip
    (root / "config.properties").write_text("".join(f"{k}={v}\n" for k, v in config.items()))
    return ["env", f"LOG_LOCATION={root / 'logs'}", f"METRICS_LOCATION={root / 'logs'}", str(bin_dir / "torchserve"),
            "--start", "--foreground", "--ncs", "--ts-config", str(root / "config.properties"), "--model-store",
            str(store), "--disable-token-auth"]  # fmt: skip


PEER_LIST = [
    Peer("kinfer", "raw", "/predict", kinfer_cmd),
    Peer("fastapi", "raw", "/predict", fastapi_cmd, PEERS / "fastapi"),
    Peer("flask", "raw", "/predict", flask_cmd),
    Peer("mlserver", "v2", "/v2/models/person/infer", mlserver_cmd, PEERS / "mlserver"),
    Peer("kserve", "v2", "/v2/models/person/infer", kserve_cmd, PEERS / "kserve"),
    Peer("bentoml", "v2", "/v2/models/person/infer", bentoml_cmd, PEERS / "bentoml"),
    Peer("rayserve", "raw", "/predict", rayserve_cmd, PEERS / "rayserve"),
    Peer("torchserve", "raw", "/predictions/person", torchserve_cmd, PEERS / "torchserve"),
]
#: the null block: the model call left out everywhere (kinfer ``--format null``, the peers' detector with
#: ``KINFER_PEER_NULL=1``), decode kept; kinfer with one part taken out beside kinfer as shipped
_NULL = {"KINFER_PEER_NULL": "1"}
NULL_LIST = [
    Peer("kinfer", "raw", "/predict", kinfer_null_cmd),
    Peer(
        "kinfer-no-deadline", "raw", "/predict", kinfer_variant_cmd("asis", "--request-read-timeout", "0", fmt="null")
    ),
    Peer("kinfer-no-middleware", "raw", "/predict", kinfer_variant_cmd("no-middleware", fmt="null")),
    Peer("kinfer-launcher", "raw", "/predict", kinfer_variant_cmd("asis", fmt="null")),  # the launcher's control
    Peer("fastapi", "raw", "/predict", fastapi_cmd, PEERS / "fastapi", env=_NULL),
    Peer("flask", "raw", "/predict", flask_cmd, env=_NULL),
]


def log(msg: str) -> None:
    print(msg, flush=True)


def body_for(protocol: str, jpeg: bytes) -> tuple[bytes, str]:
    if protocol == "raw":
        return jpeg, "image/jpeg"
    request = {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                           "data": [base64.b64encode(jpeg).decode("ascii")]}]}  # fmt: skip
    return json.dumps(request, separators=(",", ":")).encode(), "application/json"


def raw_request(url: str, path: str, body: bytes, content_type: str) -> bytes:
    host = url.split("//", 1)[1]
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")  # fmt: skip
    return head.encode() + body


class Running:
    """One peer's server process on a free loopback port; ready once a real request answers 200."""

    def __init__(self, peer: Peer, model: Path, work: Path, out: Path, jpeg: bytes) -> None:
        self.peer = peer
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = out / f"{peer.name}-server.log"
        self.log = self.log_path.open("w")
        cmd = peer.start(self.port, model, work)
        self.log.write(f"$ {' '.join(cmd)}\n")
        self.log.flush()
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=_env(peer, model),
                                     cwd=str(HERE / "peers"), start_new_session=True)  # fmt: skip
        body, ctype = body_for(peer.protocol, jpeg)
        self.raw = raw_request(self.url, peer.path, body, ctype)
        self.ready_s = self._wait_ready()

    def _wait_ready(self, timeout: float = 240) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited with {self.proc.returncode}: {self.tail()}")
            try:
                client = RawClient(self.url)
                _, head = client.request(self.raw)
                client.close()
                if head.startswith(b"HTTP/1.1 200"):
                    # every worker: a few more requests, then the answer counts
                    for _ in range(4 * WORKERS):
                        client.request(self.raw)
                    client.close()
                    return time.monotonic() - t0
            except (OSError, RuntimeError):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"not ready after {timeout:g} s: {self.tail()}")

    def cpu_seconds(self) -> float:
        """On-CPU seconds of the server's live process tree so far, every thread: the scheduler's own
        account (``/proc/PID/task/TID/schedstat``, nanoseconds; psutil's ``cpu_times`` counts 10 ms
        ticks). Waiting for a core on a shared machine does not count, unlike a sampling profiler's
        samples."""
        try:
            pids = [self.proc.pid, *(p.pid for p in psutil.Process(self.proc.pid).children(recursive=True))]
        except psutil.Error:
            return 0.0
        total = 0
        for pid in pids:
            for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
                with contextlib.suppress(OSError, ValueError, IndexError):
                    total += int(stat.read_text().split()[0])
        return total / 1e9

    def tail(self) -> str:
        return self.log_path.read_text()[-1500:]

    def memory(self) -> dict[str, Any]:
        root = psutil.Process(self.proc.pid)
        procs = [root, *root.children(recursive=True)]
        pss = rss = 0
        rows = []
        for p in procs:
            try:
                info = p.memory_full_info()
            except psutil.Error:
                continue
            pss += info.pss
            rss += info.rss
            rows.append({"pid": p.pid, "cmd": " ".join(p.cmdline())[:100], "pssMiB": round(info.pss / 2**20, 1)})
        mib = 2**20
        return {"processes": len(rows), "totalPssMiB": round(pss / mib, 1),
                "pssPerWorkerMiB": round(pss / mib / WORKERS, 1), "totalRssMiB": round(rss / mib, 1),
                "byProcess": rows}  # fmt: skip

    def stop(self) -> None:
        """SIGTERM to the server's process group, SIGKILL after 30 s; then any descendant that left the group
        (Ray's and TorchServe's workers may) is killed by its pid."""
        try:
            tree = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            tree = []
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(30)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        for child in tree:
            with contextlib.suppress(psutil.Error):
                child.kill()
        self.log.close()


def probe(
    server: Running, jpeg_path: Path, rps: float, seconds: float, raw_dir: Path, tag: str = "probe"
) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as out:
        cmd = [*KINFER, "loadgen", server.url + server.peer.path, "--method", "POST", "--payload",
               f"file:{jpeg_path}", "--protocol", server.peer.protocol, "--input-name", "image", "--rps", f"{rps:g}",
               "--duration", f"{seconds:g}", "--output", out, "--quiet", "--timeout-ms", "5000",
               "--control-port", "-1"]  # fmt: skip
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        summary = json.loads((Path(out) / "summary.json").read_text())
    (raw_dir / f"{server.peer.name}-{tag}-{rps:g}.json").write_text(json.dumps(summary, indent=1))
    sent = max(1, summary["sent"])
    return {"rps": rps, "p99": float(summary["latencyMs"]["p99"]), "sr": summary["completed"] / sent,
            "errors": summary["errors"], "completed": summary["completed"]}  # fmt: skip


def overhead(servers: dict[str, Running], model: Path, jpeg: bytes, rounds: int, n: int) -> dict[str, Any]:
    from detector import Detector

    det = Detector(model)
    row = det.row(jpeg)
    # the bare call and decode + call take their turns among the servers, pair by pair like them, so
    # that the machine's drift reaches them alike
    calls = {"(bare call)": lambda: det.run(row), "(decode + call)": lambda: det(jpeg)}
    trips: dict[str, list[list[float]]] = {name: [] for name in [*calls, *servers]}
    cpu_ms: dict[str, list[float]] = {name: [] for name in servers}
    clients = {name: RawClient(s.url) for name, s in servers.items()}
    for r in range(rounds):
        cpu0 = {name: s.cpu_seconds() for name, s in servers.items()}
        names = list(trips)
        names = names[r % len(names) :] + names[: r % len(names)]
        got: dict[str, list[float]] = {name: [] for name in names}
        for i in range(n + 2):
            for name in names:
                if name in calls:
                    calls[name]()  # the pair's first, as for the servers: the timed call follows a call
                    t0 = time.perf_counter()
                    calls[name]()
                    ms = (time.perf_counter() - t0) * 1000
                else:
                    client = clients[name]
                    client.request(servers[name].raw)  # the pair's first: it follows the other targets' turns
                    ms, head = client.request(servers[name].raw)
                    if not head.startswith(b"HTTP/1.1 200"):
                        raise RuntimeError(f"{name}: {head[:200]!r}")
                if i >= 2:
                    got[name].append(ms)
        for name in names:
            trips[name].append(got[name])
        for name, server in servers.items():  # both requests of each pair, and whatever ran in between
            cpu_ms[name].append((server.cpu_seconds() - cpu0[name]) * 1000 / (2 * (n + 2)))
        log(f"  overhead round {r + 1}/{rounds}: "
            + ", ".join(f"{name} {statistics.median(got[name]):.2f} ms" for name in trips)
            + " | CPU ms/request " + ", ".join(f"{name} {cpu_ms[name][-1]:.2f}" for name in servers))  # fmt: skip
    for client in clients.values():
        client.close()
    by_round = {name: [statistics.median(rnd) for rnd in rnds] for name, rnds in trips.items()}
    bare_ms = statistics.median(ms for rnd in trips["(bare call)"] for ms in rnd)
    work_ms = statistics.median(ms for rnd in trips["(decode + call)"] for ms in rnd)
    out: dict[str, Any] = {"bareCallMs": bare_ms, "decodeAndCallMs": work_ms, "rounds": rounds, "perRound": n}
    for name in servers:
        rt = statistics.median(ms for rnd in trips[name] for ms in rnd)
        # paired round by round with the in-process calls: the machine's drift cancels
        over_bare = [a - b for a, b in zip(by_round[name], by_round["(bare call)"], strict=True)]
        over_work = [a - b for a, b in zip(by_round[name], by_round["(decode + call)"], strict=True)]
        out[name] = {"roundTripMs": rt, "overBareCallMs": statistics.median(over_bare),
                     "overDecodeAndCallMs": statistics.median(over_work),
                     "cpuMsPerRequest": statistics.median(cpu_ms[name]),
                     "cpuMsPerRequestByRound": [round(ms, 3) for ms in cpu_ms[name]],
                     "byRoundMs": [round(ms, 3) for ms in by_round[name]]}  # fmt: skip
    return out


def profile(servers: dict[str, Running], jpeg_path: Path, rps: float, seconds: float, out: Path) -> dict[str, Any]:
    """Where each server's time goes per request: ``py-spy`` samples the server's whole process tree (active
    samples only: a thread running or runnable, not one sleeping or waiting, 200 per second) while
    ``kinfer loadgen`` offers ``rps`` for ``seconds``; each sample is put in one class by the frames it
    holds: the ONNX Runtime call, decoding and pre-processing, or the rest (HTTP, framework, the server's
    own features). Active ms per request = samples x 5 ms / requests; on a busy machine a runnable thread
    waiting for a core counts too, so compare servers within one run."""
    spy = PEERS / "py-spy" / "bin" / "py-spy"
    if not spy.exists():
        return {"skipped": f"{spy} not installed (tests/perf/peers/install.sh py-spy)"}
    result: dict[str, Any] = {}
    for name, server in servers.items():
        raw = out / f"{name}-profile.txt"
        spy_proc = subprocess.Popen(
            [str(spy), "record", "--pid", str(server.proc.pid), "--subprocesses", "--rate", "200", "--format", "raw",
             "--nonblocking", "--duration", f"{seconds + 1:g}", "--output", str(raw)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        time.sleep(1.0)
        r = probe(server, jpeg_path, rps, seconds, out, tag="profile")
        _, err = spy_proc.communicate(timeout=120)
        if not raw.exists():
            result[name] = {"error": err.strip()[-300:]}
            continue
        classes = {"onnxruntime call": 0, "decode + preprocess": 0, "everything else": 0}
        for line in raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            if "onnxruntime/capi" in stack:
                classes["onnxruntime call"] += int(count)
            elif "decode_image (" in stack or "preprocess (" in stack:
                classes["decode + preprocess"] += int(count)
            else:
                classes["everything else"] += int(count)
        requests = max(1, int(r["completed"]))
        result[name] = {"requests": requests,
                        "activeMsPerRequest": {k: round(v * 5 / requests, 2) for k, v in classes.items()}}  # fmt: skip
        log(f"  profile {name:<9}: " + ", ".join(f"{k} {v:.2f}" for k, v in result[name]["activeMsPerRequest"].items())
            + " active ms/request")  # fmt: skip
    return result


def null_block(model: Path, jpeg: bytes, work: Path, out: Path, rounds: int, n: int) -> dict[str, Any]:
    """What each server costs beyond the model: the model call left out everywhere (NULL_LIST), ``n``
    requests one at a time per server per round, servers in turns (the order rotates each round), on-CPU
    ms per request of each process tree and the median round trip. Paired round by round with kinfer as
    shipped. With the model call in, each process's ONNX Runtime call runs at its own speed (a few
    per cent apart, as the pages its buffers land on): a 0.5 ms difference there is not the server's."""
    raw_dir = out / "null"
    raw_dir.mkdir(exist_ok=True)
    servers: dict[str, Running] = {}
    try:
        for peer in NULL_LIST:
            if peer.venv is not None and not (peer.venv / ".ok").exists():
                continue
            servers[peer.name] = Running(peer, model, work, raw_dir, jpeg)
        clients = {name: RawClient(s.url) for name, s in servers.items()}
        cpu: dict[str, list[float]] = {name: [] for name in servers}
        rt: dict[str, list[float]] = {name: [] for name in servers}
        names = list(servers)
        for r in range(rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                server, client = servers[name], clients[name]
                client.request(server.raw)
                c0 = server.cpu_seconds()
                trips = [client.request(server.raw)[0] for _ in range(n)]
                cpu[name].append((server.cpu_seconds() - c0) * 1000 / n)
                rt[name].append(statistics.median(trips))
            log(f"  null round {r + 1}/{rounds}: CPU ms/request "
                + ", ".join(f"{name} {cpu[name][-1]:.3f}" for name in names))  # fmt: skip
        for client in clients.values():
            client.close()
    finally:
        for server in servers.values():
            server.stop()
    result: dict[str, Any] = {"rounds": rounds, "perRound": n}
    for name in servers:
        result[name] = {"cpuMsPerRequest": round(statistics.median(cpu[name]), 4),
                        "roundTripMs": round(statistics.median(rt[name]), 4),
                        "cpuMsByRound": [round(v, 4) for v in cpu[name]]}  # fmt: skip
        if name != "kinfer" and "kinfer" in servers:
            result[name]["kinferMinusThisCpuMs"] = round(
                statistics.median(a - b for a, b in zip(cpu["kinfer"], cpu[name], strict=True)), 4
            )
            result[name]["kinferMinusThisRoundTripMs"] = round(
                statistics.median(a - b for a, b in zip(rt["kinfer"], rt[name], strict=True)), 4
            )
    log(f"  {'null block':<22} {'CPU ms/request':>15} {'round trip ms':>14} {'kinfer minus this: CPU':>23} "
        f"{'round trip':>11}")  # fmt: skip
    for name in servers:
        row = result[name]
        log(f"  {name:<22} {row['cpuMsPerRequest']:>15.3f} {row['roundTripMs']:>14.3f} "
            f"{row.get('kinferMinusThisCpuMs', 0.0):>23.3f} "
            f"{row.get('kinferMinusThisRoundTripMs', 0.0):>11.3f}")  # fmt: skip
    return result


#: where a worker's on-CPU time goes, by the module of the function that spent it (its own time, not
#: its callees'); the first match wins
GROUPS = [("onnxruntime call", "onnxruntime"), ("decode + preprocess", "kinfer/server/preprocess"),
          ("kinfer middleware", "kinfer/server/middleware"), ("kinfer metrics", "kinfer/server/metrics"),
          ("prometheus_client", "prometheus_client"), ("read deadline", "kinfer/server/workers"),
          ("kinfer app", "kinfer/server/"), ("gunicorn", "gunicorn/"), ("flask + werkzeug", "werkzeug/"),
          ("flask + werkzeug", "flask/"), ("json", "json/"), ("socket + select", "socket"),
          ("socket + select", "selectors")]  # fmt: skip


def cprofile_kinfer(model: Path, jpeg: bytes, work: Path, out: Path, n: int) -> dict[str, Any]:
    """kinfer as shipped, each worker under cProfile with a CPU-time clock (tests/perf/peers/kinfer_variant.py),
    ``n`` requests one at a time: each group's own CPU ms per request. cProfile's hooks cost CPU in every
    Python call, so the Python-heavy groups read high; the ranking is what counts."""
    prof_dir = work / "cprofile"
    prof_dir.mkdir(exist_ok=True)
    peer = Peer("kinfer-cprofile", "raw", "/predict", kinfer_variant_cmd(f"cprofile:{prof_dir}"))
    server = Running(peer, model, work, out, jpeg)
    client = RawClient(server.url)
    try:
        for _ in range(n):
            client.request(server.raw)
    finally:
        client.close()
        server.stop()
    import pstats

    groups: dict[str, float] = {}
    total = 0.0
    for prof in prof_dir.glob("*.prof"):
        stats: dict[Any, Any] = pstats.Stats(str(prof)).stats  # type: ignore[attr-defined]
        for (filename, _line, func), (_cc, _nc, tottime, _ct, _callers) in stats.items():
            where = f"{filename}:{func}"
            group = next((g for g, key in GROUPS if key in where), "other")
            if filename == "~":  # a C function: its caller's module is unknown here; named by the function
                group = next((g for g, key in GROUPS if key in func), "other (C calls)")
            groups[group] = groups.get(group, 0.0) + tottime
            total += tottime
    served = n + 4 * WORKERS + 1  # the readiness requests count too
    result: dict[str, Any] = {"requests": served, "cpuMsPerRequest": {g: round(v * 1000 / served, 3)
                                                      for g, v in sorted(groups.items(), key=lambda kv: -kv[1])},
              "totalCpuMsPerRequest": round(total * 1000 / served, 3)}  # fmt: skip
    log("  cProfile (CPU clock) kinfer, own CPU ms/request: "
        + ", ".join(f"{g} {v:.3f}" for g, v in result["cpuMsPerRequest"].items()))  # fmt: skip
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default=",".join(p.name for p in PEER_LIST))
    parser.add_argument("--null-rounds", type=int, default=5, help="rounds of the null block (model call left out)")
    parser.add_argument("--null-requests", type=int, default=300, help="requests per server per null round")
    parser.add_argument("--cprofile-requests", type=int, default=300,
                        help="requests of the cProfile block (kinfer under cProfile, CPU clock)")  # fmt: skip
    parser.add_argument("--model", type=Path, default=ROOT / ".demo" / "ssdlite-person")
    parser.add_argument("--probe-s", type=float, default=10.0)
    parser.add_argument("--start-rps", type=float, default=16.0, help="first probe (every server held 8 here)")
    parser.add_argument("--bisections", type=int, default=2)
    parser.add_argument("--overhead-rounds", type=int, default=5)
    parser.add_argument("--profile-rps", type=float, default=10.0, help="rate of the py-spy profile block")
    parser.add_argument("--skip", default="", help="comma list of: capacity,overhead,profile,cprofile,null")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench-peers")
    args = parser.parse_args()
    out = args.out / "servers"
    out.mkdir(parents=True, exist_ok=True)
    model = args.model.resolve()
    jpeg_path = model / "dataset" / "astronaut.jpg"
    jpeg = jpeg_path.read_bytes()
    skip = set(args.skip.split(","))
    wanted = args.servers.split(",")
    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "model": str(model),
                              "workers": WORKERS, "sloP99Ms": SLO_MS, "failed": {}, "notMeasured": {}}  # fmt: skip
    servers: dict[str, Running] = {}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for peer in PEER_LIST:
                if peer.name not in wanted:
                    continue
                if peer.venv is not None and not (peer.venv / ".ok").exists():
                    report["failed"][peer.name] = f"not installed (see {args.out}/install/{peer.name}.log)"
                    log(f"{peer.name}: SKIPPED, {report['failed'][peer.name]}")
                    continue
                log(f"starting {peer.name} ...")
                try:
                    servers[peer.name] = Running(peer, model, Path(tmp), out, jpeg)
                    log(f"  {peer.name} ready in {servers[peer.name].ready_s:.1f} s at {servers[peer.name].url}")
                except Exception as exc:  # a peer that does not start is a result: record it, go on
                    report["failed"][peer.name] = f"{type(exc).__name__}: {exc}"
                    log(f"  {peer.name} FAILED: {exc}")
            if "overhead" not in skip and servers:
                report["overhead"] = overhead(servers, model, jpeg, args.overhead_rounds, 40)
            if "cprofile" not in skip and "kinfer" in servers:
                report["cprofile"] = cprofile_kinfer(model, jpeg, Path(tmp), out, args.cprofile_requests)
            if "profile" not in skip and servers:
                report["profile"] = profile(servers, jpeg_path, args.profile_rps, args.probe_s, out)
            if "capacity" not in skip and servers:
                searches = {name: CapacitySearch(args.start_rps, args.bisections) for name in servers}
                while not all(s.done for s in searches.values()):
                    for name, search in searches.items():
                        if search.done:
                            continue
                        r = probe(servers[name], jpeg_path, search.rate, args.probe_s, out)
                        log(f"  {name:<10} {r['rps']:7.1f} rps -> p99 {r['p99']:8.1f} ms, success {r['sr']:.3f}")
                        search.record(r)
                report["capacity"] = {name: {"capacityRPS": s.good, "probes": s.probes} for name, s in searches.items()}
            report["memory"] = {name: s.memory() for name, s in servers.items()}
        finally:
            for s in servers.values():
                s.stop()
        if "null" not in skip and "kinfer" in wanted:
            report["null"] = null_block(model, jpeg, Path(tmp), out, args.null_rounds, args.null_requests)
    (args.out / "servers.json").write_text(json.dumps(report, indent=1))
    log(f"\n{'server':<20} {'capacity rps':>12} {'round trip ms':>14} {'over bare call':>15} "
        f"{'over decode+call':>17} {'CPU ms/request':>15} {'PSS/worker MiB':>15}")  # fmt: skip
    oh = report.get("overhead", {})

    def f(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    for name in [*servers, *(n for n in oh if isinstance(oh[n], dict) and n not in servers)]:
        cap = report.get("capacity", {}).get(name, {}).get("capacityRPS")
        o = oh.get(name, {})
        mem = report.get("memory", {}).get(name, {}).get("pssPerWorkerMiB", "-")
        log(f"{name:<20} {'-' if cap is None else f'{cap:g}':>12} {f(o.get('roundTripMs')):>14} "
            f"{f(o.get('overBareCallMs')):>15} {f(o.get('overDecodeAndCallMs')):>17} "
            f"{f(o.get('cpuMsPerRequest')):>15} {mem:>15}")  # fmt: skip
    if oh:
        log(
            f"bare ONNX Runtime call {oh['bareCallMs']:.2f} ms, decode + call {oh['decodeAndCallMs']:.2f} ms "
            "(in-process)"
        )
    for name, why in {**report["failed"], **report["notMeasured"]}.items():
        log(f"{name}: {why}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
