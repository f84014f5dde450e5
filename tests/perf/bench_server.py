"""Model-server benchmark: the seed's design against kinfer's best configuration, in one run.

Run by hand (not collected by pytest)::

    .venv/bin/python tests/perf/bench_server.py [--probe-s 20] [--repeats 2] [--out /tmp/kinfer-bench]

The defaults take about 15 minutes on a 2-core machine. Model: the SSD-MobileNet-300 shape (random
weights, real size: 27 MB, 1917 anchors, NMS), built once with ``kinfer model build ssd-mobilenet``
into ``--out``. Both servers answer ``GET /gpu`` (one
inference on a preloaded dataset image), driven by ``kinfer loadgen`` open-loop (Poisson arrivals,
latency from the scheduled send time). For each configuration the highest rate whose p99 stays
<= 100 ms (``--slo-ms``) is found by doubling then bisecting, and the saturation throughput (responses
per second when offered ``--saturate-rps``) is measured.

Also measured (``--overhead-only`` skips the searches): what ``POST /predict`` of a dataset JPEG costs
beyond the model call, one request at a time over a plain keep-alive socket, as the round trip minus
the server's own infer stage (``Server-Timing``) and as its median minus the median bare ONNX Runtime
call in this process, over ``--overhead-rounds`` interleaved rounds. Controls in the same rounds: the
null backend back to back and sleeping 30 ms (a model call's length) instead of the model;
``floor_server.py``, a bare socket server with the same decoder and no framework, sleeping alike: what
this machine charges any Python server for the round trip, the decoding and the wake-up after a wait;
and ``flask_floor_server.py``, the least gunicorn + Flask app with the same decoder and model call.
Timings on a shared machine are noisy: compare within one run only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import requests

ROOT = Path(__file__).resolve().parents[2]
KINFER = [sys.executable, "-m", "kinfer.cli"]
#: p99 objective of the capacity search (``--slo-ms`` changes it).
SLO = {"p99Ms": 100.0}
#: The overhead block's framework control; kinfer's rows also report their excess over it, round by round.
FLASK_CONTROL = "control: minimal gunicorn + Flask app, same decoder and ONNX call"
LISTENING = re.compile(r"listening on (http://127\.0\.0\.1:\d+)")


@dataclass(frozen=True)
class Design:
    name: str
    args: tuple[str, ...]


SEED = Design("seed: gunicorn sync workers, TF frozen graph, batch 1",
              ("--format", "tf-graphdef", "--workers", "2", "--threads", "1"))  # fmt: skip
CANDIDATES = [
    Design("kinfer: onnx, 2 sync workers x 1 runtime thread",
           ("--format", "onnx", "--workers", "2", "--threads", "1", "--intra-op-threads", "1")),
    Design("kinfer: onnx, 2 sync workers, runtime default threads",
           ("--format", "onnx", "--workers", "2", "--threads", "1")),
]  # fmt: skip


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def build_model(out: Path) -> Path:
    model = out / "ssd-mobilenet"
    if not (model / "model.json").exists():
        log(f"building ssd-mobilenet (random weights, real shape) into {model} ...")
        cmd = [*KINFER, "model", "build", "ssd-mobilenet", "--output", str(model), "--no-savedmodel"]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return model


class Server:
    """``kinfer serve --model MODEL ARGS`` on a free loopback port."""

    def __init__(self, model: Path, args: tuple[str, ...], command: list[str] | None = None) -> None:
        self.log = tempfile.NamedTemporaryFile("w+", prefix="kinfer-serve-", suffix=".log")  # noqa: SIM115
        self.workers = int(args[args.index("--workers") + 1]) if "--workers" in args else 1
        cmd = command or [*KINFER, "serve", "--model", str(model), *args, "--host", "127.0.0.1", "--port", "0"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.log,
                                     env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})  # fmt: skip
        self.url = self._wait_url()
        if command is None:
            self._wait_ready()

    @classmethod
    def floor(cls, delay_ms: float) -> Server:
        """``floor_server.py``: read, decode, wait ``delay_ms``, answer; no framework (a control)."""
        script = Path(__file__).with_name("floor_server.py")
        return cls(Path(), (), [sys.executable, str(script), "--delay-ms", str(delay_ms)])

    @classmethod
    def flask_floor(cls, model: Path) -> Server:
        """``flask_floor_server.py``: gunicorn + Flask, the same decoder and model call, nothing else."""
        script = Path(__file__).with_name("flask_floor_server.py")
        return cls(Path(), (), [sys.executable, str(script), "--model", str(model)])

    def _text(self) -> str:
        return Path(self.log.name).read_text()

    def _wait_url(self, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = LISTENING.search(self._text())
            if match:
                return match.group(1)
            time.sleep(0.1)
        raise RuntimeError(self._text())

    def _wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if requests.get(self.url + "/v2/health/ready", timeout=5).status_code == 200:
                    # readiness is per worker: wait until every worker reports ready
                    metrics = requests.get(self.url + "/metrics", timeout=5).text
                    ready = re.search(r"kinfer_server_workers_ready\{[^}]*\} (\S+)", metrics)
                    if ready and float(ready.group(1)) >= self.workers:
                        return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError("not ready:\n" + self._text())

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def probe(url: str, rps: float, seconds: float) -> dict[str, float]:
    """One open-loop run of ``kinfer loadgen``: p99 (ms, from the scheduled time) and success rate."""
    with tempfile.TemporaryDirectory() as out:
        subprocess.run(
            [*KINFER, "loadgen", url + "/gpu", "--rps", f"{rps:g}", "--duration", f"{seconds:g}",
             "--output", out, "--quiet", "--timeout-ms", "5000", "--control-port", "0"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        summary = json.loads((Path(out) / "summary.json").read_text())
    sent = max(1, summary["sent"])
    return {"rps": rps, "p99": float(summary["latencyMs"]["p99"]), "sr": summary["completed"] / sent,
            "completedPerS": summary["completed"] / max(1e-9, float(summary["durationS"]))}  # fmt: skip


def meets(result: dict[str, float]) -> bool:
    return result["p99"] <= SLO["p99Ms"] and result["sr"] >= 0.99


class CapacitySearch:
    """Highest rate meeting p99 <= SLO with >= 99 % success (``meets``): double from ``start`` until it
    fails, then bisect ``bisections`` times. Shared by bench_server.py and bench_peer_servers.py."""

    def __init__(self, start: float, bisections: int = 3) -> None:
        self.good: float = 0.0
        self.bad: float | None = None
        self.rate = start
        self.left = bisections
        self.probes: list[dict[str, float]] = []

    @property
    def done(self) -> bool:
        return self.bad is not None and self.left == 0

    def record(self, result: dict[str, float]) -> None:
        self.probes.append(result)
        ok = meets(result)
        if self.bad is None:
            if ok:
                self.good, self.rate = self.rate, self.rate * 2
                return
            self.bad = self.rate
        else:
            self.left -= 1
            if ok:
                self.good = self.rate
            else:
                self.bad = self.rate
        self.rate = round((self.good + self.bad) / 2, 1)


class RawClient:
    """One keep-alive HTTP/1.1 connection driven with plain socket calls.

    ``http.client`` alone costs about 0.5 ms per request on this machine; the figure wanted is the
    server's, so the request bytes are built once and the response is read until its Content-Length.
    Reconnects when the server closes (gunicorn's sync worker closes after every response).
    """

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.address = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.sock: socket.socket | None = None
        #: how long each (re)connection took: outside the timed round trips, reported on its own
        self.connect_ms: list[float] = []

    def request(self, raw: bytes) -> tuple[float, bytes]:
        """Send ``raw``; return (milliseconds until the whole response was read, response head)."""
        if self.sock is None:
            t0 = time.perf_counter()
            self.sock = socket.create_connection(self.address, timeout=30)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.connect_ms.append((time.perf_counter() - t0) * 1000)
        start = time.perf_counter()
        self.sock.sendall(raw)
        buf = b""
        while True:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise RuntimeError("server closed the connection mid-response")
            buf += chunk
            head, sep, body = buf.partition(b"\r\n\r\n")
            length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
            if sep and length and len(body) >= int(length.group(1)):
                break
            if (
                sep
                and not length
                and re.search(rb"(?i)\r\ntransfer-encoding: *chunked", head)
                and body.endswith(b"0\r\n\r\n")
            ):  # a chunked answer (Ray Serve's proxy) ends with its zero-length chunk
                break
        elapsed = (time.perf_counter() - start) * 1000
        if re.search(rb"(?i)\r\nconnection: *close", head):
            self.close()
        return elapsed, head

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def _post(url: str, path: str, body: bytes) -> bytes:
    host = urlsplit(url).netloc
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


def _stages(head: bytes) -> dict[str, float]:
    assert head.startswith(b"HTTP/1.1 200"), head
    return {k.decode(): float(v) for k, v in re.findall(rb"(\w+);dur=([\d.]+)", head)}


def _median_stages(runs: list[tuple[float, dict[str, float]]]) -> dict[str, float]:
    return {
        "predictMs": statistics.median(total for total, _ in runs),
        "besideInferMs": statistics.median(total - t["infer"] for total, t in runs),
        "preprocessMs": statistics.median(t.get("preprocess", 0.0) for _, t in runs),
        "postprocessMs": statistics.median(t.get("postprocess", 0.0) for _, t in runs),
        "httpAndFrameworkMs": statistics.median(total - sum(t.values()) for total, t in runs),
    }


def overhead_targets(model: Path) -> dict[str, Server]:
    """The servers whose ``/predict`` overhead is measured, and the controls, all started at once."""
    sync = ("--workers", "1", "--threads", "1")
    specs: dict[str, tuple[str, ...] | float | Path] = {
        "kinfer: onnx, sync worker (connection closed after each response)": ("--format", "onnx", *sync),
        "kinfer: onnx, gthread worker, 2 threads (keep-alive)": ("--format", "onnx", "--threads", "2"),
        "control: kinfer, null backend sleeping 30 ms, sync worker": ("--format", "null", "--delay-ms", "30", *sync),
        "control: kinfer, null backend, back to back, sync worker": ("--format", "null", "--delay-ms", "0", *sync),
        "control: bare socket server, same decoder, sleeping 30 ms": 30.0,
        FLASK_CONTROL: model,
    }
    servers: dict[str, Server] = {}
    try:
        for name, spec in specs.items():
            log(f"starting {name}")
            if isinstance(spec, float):
                servers[name] = Server.floor(spec)
            elif isinstance(spec, Path):
                servers[name] = Server.flask_floor(spec)
            else:
                servers[name] = Server(model, spec)
    except BaseException:
        for server in servers.values():
            server.stop()
        raise
    return servers


def overhead(model: Path, rounds: int = 5, n: int = 60) -> dict[str, object]:
    """What ``POST /predict`` of a dataset JPEG costs beyond the model call, one request at a time.

    Every target gets ``n`` timed requests per round from a plain keep-alive socket client, each the
    second of a back-to-back pair, the targets taking turns pair by pair (so that a shared machine's
    drift reaches every target alike); each round also times ``n`` bare ONNX Runtime calls in this
    process and starts with the next target. ``besideInferMs`` is the
    round trip minus the server's own infer stage (``Server-Timing``): the overhead, free of the
    model's run-to-run noise. ``overMinimalFlaskMs`` (kinfer's rows) is the median over rounds of a
    row's round median minus the minimal gunicorn + Flask app's: what kinfer adds to the framework.
    ``overheadMs`` is the median round trip minus the median bare call.

    The controls say what the machine itself charges: the same server with no model work (back to
    back, and sleeping as long as a model call), a bare socket server with the same decoder and no
    framework, sleeping alike (its figure is the floor any Python server pays here), and a minimal
    gunicorn + Flask app with the same decoder and model call (what the framework the issue fixes
    costs before kinfer adds metrics, readiness and post-processing).
    """
    import numpy as np
    import onnxruntime as ort

    from kinfer.server.preprocess import decode_image, preprocess

    data = (model / "dataset" / "astronaut.jpg").read_bytes()
    meta = json.loads((model / "model.json").read_text())
    row = preprocess(decode_image(data), meta["preprocess"], tuple(meta["inputSize"]), "uint8")[np.newaxis]
    opts = ort.SessionOptions()  # as the server's backend sets it: idle threads must not spin
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(model / "model.onnx"), opts, providers=["CPUExecutionProvider"])
    servers = overhead_targets(model)
    try:
        clients = {name: RawClient(server.url) for name, server in servers.items()}
        raws = {name: _post(server.url, "/predict", data) for name, server in servers.items()}
        bare: list[float] = []
        runs: dict[str, list[list[tuple[float, dict[str, float]]]]] = {name: [] for name in servers}
        for r in range(rounds):
            for _ in range(n):
                t0 = time.perf_counter()
                session.run(None, {"image_tensor:0": row})
                bare.append((time.perf_counter() - t0) * 1000)
            # Within a round the targets take turns pair by pair: each turn sends two requests back
            # to back and times the second (it follows a request on the same server, as in a steady
            # stream, not the turn's reconnect after the other targets ran). Turns this short leave
            # the machine's drift (often larger than the differences measured) no time to favour one
            # target; each round starts one target later.
            names = list(clients)
            names = names[r % len(names) :] + names[: r % len(names)]
            measured: dict[str, list[tuple[float, dict[str, float]]]] = {name: [] for name in names}
            for i in range(n + 2):
                for name in names:
                    client = clients[name]
                    client.request(raws[name])
                    total, head = client.request(raws[name])
                    client.close()
                    if i >= 2:
                        measured[name].append((total, _stages(head)))
            for name in names:
                runs[name].append(measured[name])
            log(f"  overhead round {r + 1}/{rounds}: " + ", ".join(
                f"{name.split(',')[0][:20]}... {_median_stages(runs[name][-1])['besideInferMs']:.2f} ms"
                for name in servers))  # fmt: skip
    finally:
        for server in servers.values():
            server.stop()
    out: dict[str, object] = {"bareMs": statistics.median(bare), "rounds": rounds, "requestsPerRound": n}
    by_round_ms = {name: [_median_stages(rnd)["besideInferMs"] for rnd in rnds] for name, rnds in runs.items()}
    framework = by_round_ms[FLASK_CONTROL]
    for name, by_round in runs.items():
        stats: dict[str, object] = dict(_median_stages([run for rnd in by_round for run in rnd]))
        stats["besideInferMsByRound"] = [round(ms, 3) for ms in by_round_ms[name]]
        if name.startswith("kinfer"):
            # paired by round, so the machine's drift (often larger than the difference) cancels
            diffs = [mine - theirs for mine, theirs in zip(by_round_ms[name], framework, strict=True)]
            stats["overMinimalFlaskMs"] = statistics.median(diffs)
        if "ONNX" in name or name.startswith("kinfer: onnx"):
            stats["overheadMs"] = float(stats["predictMs"]) - statistics.median(bare)  # type: ignore[arg-type]
        if clients[name].connect_ms:
            stats["connectMs"] = statistics.median(clients[name].connect_ms)
        out[name] = stats
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="/tmp/kinfer-bench", help="where the model is built/cached")
    parser.add_argument("--probe-s", type=float, default=20.0, help="seconds per load probe")
    parser.add_argument("--start-rps", type=float, default=8.0, help="first probe rate")
    parser.add_argument("--slo-ms", type=float, default=100.0, help="p99 objective of the capacity search")
    parser.add_argument(
        "--saturate-rps",
        type=float,
        default=40.0,
        help="open-loop rate near saturation, for the throughput (far beyond it, open-loop requests time out)",
    )
    parser.add_argument("--skip-overhead", action="store_true")
    parser.add_argument("--overhead-only", action="store_true", help="skip the capacity searches")
    parser.add_argument("--overhead-rounds", type=int, default=5, help="interleaved rounds of the overhead block")
    parser.add_argument(
        "--repeats", type=int, default=2, help="capacity searches per design; the median capacity is compared"
    )
    args = parser.parse_args()
    SLO["p99Ms"] = args.slo_ms
    model = build_model(Path(args.out))
    report: dict[str, object] = {} if args.overhead_only else repeated_capacity(model, args)
    if not args.skip_overhead:
        report["overhead"] = overhead(model, rounds=args.overhead_rounds)
    print(json.dumps(report, indent=2))
    return 0


def repeated_capacity(model: Path, args: argparse.Namespace) -> dict[str, object]:
    """``capacity`` ``--repeats`` times; the designs' median capacities and their ratio.

    A p99 over a few hundred requests near a 100 ms objective swings with a shared machine's hiccups,
    so one search can land a design a step or two off; the median of several is the figure to quote.
    """
    runs = [capacity(model, args) for _ in range(max(1, args.repeats))]
    if len(runs) == 1:
        return runs[0]
    names = list(runs[0]["designs"])  # type: ignore[call-overload]
    medians = {n: statistics.median(r["designs"][n]["capacityRPS"] for r in runs) for n in names}  # type: ignore[index]
    best = max(names[1:], key=lambda n: medians[n])
    return {
        "runs": runs,
        "medianCapacityRPS": medians,
        "bestKinfer": best,
        "speedupOfMedians": medians[best] / medians[names[0]] if medians[names[0]] else None,
    }


def capacity(model: Path, args: argparse.Namespace) -> dict[str, object]:
    """The capacity searches and saturation throughputs of the seed design and kinfer's candidates."""
    designs = [SEED, *CANDIDATES]
    # All servers run side by side and the searches advance in lockstep, so that the background load
    # of a shared machine drifts over every design alike.
    servers = {}
    try:
        for design in designs:
            log(f"starting {design.name}:\n  kinfer serve --model {model} {' '.join(design.args)}")
            servers[design.name] = Server(model, design.args)
        searches = {d.name: CapacitySearch(args.start_rps) for d in designs}
        while not all(s.done for s in searches.values()):
            for name, search in searches.items():
                if search.done:
                    continue
                result = probe(servers[name].url, search.rate, args.probe_s)
                log(f"  {name[:40]:<40} {result['rps']:7.1f} rps -> p99 {result['p99']:8.1f} ms, "
                    f"success {result['sr']:.3f}")  # fmt: skip
                search.record(result)
        # Saturation throughput: responses per second when offered more than any design can serve.
        # An average over the whole probe, so it is far less sensitive to a shared machine's hiccups
        # than a p99 near the noise floor.
        saturation = {}
        for name, server in servers.items():
            result = probe(server.url, args.saturate_rps, args.probe_s)
            saturation[name] = result["completedPerS"]
            log(
                f"  {name[:40]:<40} saturated at {args.saturate_rps:g} rps -> {result['completedPerS']:.1f} responses/s"
            )
    finally:
        for server in servers.values():
            server.stop()
    results = {
        d.name: {
            "args": " ".join(d.args),
            "capacityRPS": searches[d.name].good,
            "saturationQPS": saturation[d.name],
            "probes": searches[d.name].probes,
        }
        for d in designs
    }
    capacity = {d.name: searches[d.name].good for d in designs}
    seed_cap = capacity[SEED.name]
    best_name = max((d.name for d in CANDIDATES), key=lambda n: capacity[n])
    return {
        "sloP99Ms": SLO["p99Ms"],
        "designs": results,
        "seedCapacityRPS": seed_cap,
        "bestKinfer": best_name,
        "bestKinferCapacityRPS": capacity[best_name],
        "speedup": capacity[best_name] / seed_cap if seed_cap else None,
        "saturationSpeedup": saturation[best_name] / max(1e-9, saturation[SEED.name]),
    }


if __name__ == "__main__":
    raise SystemExit(main())
