"""Closed loop, side by side with ``hey``: the same concurrency against the same fast endpoint, each client
pinned to the same single core with ``taskset``. Run by hand, not by pytest::

    .venv/bin/python tests/perf/bench_closed_loop.py [--duration 5] [--concurrency 1,8,32] [--rounds 3]

The endpoint (tests/perf/loadgen_target.py, uvloop, answers in microseconds) runs on the last CPU; both
clients run on one other CPU (``taskset -c``), ``kinfer loadgen --concurrency N`` with all its processes
(parent and generator) and ``hey -c N`` (no rate limit: each of its N workers sends back to back, as
kinfer's N clients do). Rounds alternate the two clients, so a machine's drift reaches both alike; the
table gives each client's median requests/s over the rounds and the ratio kinfer / hey (>= 1: kinfer is
not slower). The check: the ratio is >= 1 at every concurrency.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
_SCRIPT = Path(sys.executable).parent / "kinfer"
KINFER = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "kinfer.cli"]
HEY = os.environ.get("KINFER_BENCH_HEY") or shutil.which("hey") or "/usr/bin/hey"
TASKSET = shutil.which("taskset") or "/usr/bin/taskset"


def kinfer_rps(url: str, concurrency: int, duration: float, cpu: int) -> tuple[float, float | None]:
    """requests/s and p99 ms of one ``kinfer loadgen --concurrency`` run, every process on ``cpu``."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [TASKSET, "-c", str(cpu), *KINFER, "loadgen", url, "--concurrency", str(concurrency),
               "--duration", str(duration), "--output", out, "--control-port", "-1", "--quiet"]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr}")
        s = json.loads((Path(out) / "summary.json").read_text())
    if s["errors"]:
        raise SystemExit(f"kinfer loadgen saw errors: {s['errorsByClass']}")
    return float(s["throughput"]["requestsPerS"]), s["latencyMs"]["p99"]


def hey_rps(url: str, concurrency: int, duration: float, cpu: int) -> tuple[float, float | None]:
    """requests/s and p99 ms of one ``hey -c N -z Ds`` run on ``cpu``."""
    cmd = [TASKSET, "-c", str(cpu), HEY, "-z", f"{duration}s", "-c", str(concurrency), url]
    text = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rate = re.search(r"Requests/sec:\s+([0-9.]+)", text)
    p99 = re.search(r"\s99% in ([0-9.]+) secs", text)
    if rate is None:
        raise SystemExit(f"cannot read hey's output:\n{text}")
    return float(rate.group(1)), float(p99.group(1)) * 1000 if p99 else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if not Path(HEY).exists():
        raise SystemExit(f"hey not found at {HEY} (apt-get install -y hey)")
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit("needs at least 2 CPUs (endpoint and client on different cores)")
    server_cpu, client_cpu = cpus[-1], cpus[-2] if len(cpus) < 5 else cpus[1]
    print(f"cpus: endpoint {server_cpu}, client (kinfer or hey) {client_cpu}; {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)  # fmt: skip
    port = _free_port()
    server = subprocess.Popen([sys.executable, str(HERE / "loadgen_target.py"), str(port), str(server_cpu)],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert server.stdout is not None
    server.stdout.readline()
    url = f"http://127.0.0.1:{port}/helloworld"
    rows = []
    try:
        for c in (int(x) for x in args.concurrency.split(",")):
            ours: list[tuple[float, float | None]] = []
            theirs: list[tuple[float, float | None]] = []
            for i in range(args.rounds):
                pair = [("kinfer", kinfer_rps), ("hey", hey_rps)]
                for name, fn in pair if i % 2 == 0 else reversed(pair):
                    (ours if name == "kinfer" else theirs).append(fn(url, c, args.duration, client_cpu))
            k = statistics.median(r for r, _ in ours)
            h = statistics.median(r for r, _ in theirs)
            kp = statistics.median(p for _, p in ours if p is not None)
            hp = statistics.median(p for _, p in theirs if p is not None)
            rows.append((c, k, h, kp, hp, [round(r) for r, _ in ours], [round(r) for r, _ in theirs]))
            print(f"concurrency {c}: kinfer {[round(r) for r, _ in ours]} hey {[round(r) for r, _ in theirs]}",
                  flush=True)  # fmt: skip
    finally:
        server.terminate()
        server.wait()
    print()
    head = (f"{'concurrency':>11} {'kinfer req/s':>13} {'hey req/s':>10} {'ratio':>6} "
            f"{'kinfer p99ms':>13} {'hey p99ms':>10}")
    print(head)
    print("-" * len(head))
    for c, k, h, kp, hp, _, _ in rows:
        print(f"{c:>11} {k:>13.0f} {h:>10.0f} {k / h:>6.2f} {kp:>13.2f} {hp:>10.2f}")
    worst = min(k / h for _, k, h, *_ in rows)
    print(f"\nkinfer / hey, median requests/s per concurrency, lowest: {worst:.2f} (>= 1: not slower): "
          f"{'PASS' if worst >= 1 else 'FAIL'}")  # fmt: skip
    return 0


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


if __name__ == "__main__":
    raise SystemExit(main())
