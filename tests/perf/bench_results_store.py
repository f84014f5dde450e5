"""What the operator stores for a run: bytes per 1 s record in the results ConfigMaps, for a real run.

``python tests/perf/bench_results_store.py --duration 600 [--rps 100]`` starts the real model server
(``kinfer serve --format null``, 2 workers) and the real generator (``kinfer loadgen`` with
``--server-metrics`` on the server's /metrics, so records carry the server's CPU and memory as on a
cluster), then does what the operator does every second: ``GET /api/status?summary=1``, ``GET
/api/records?since=N``, and the one write :func:`kinfer.stored_results.plan_write` plans, applied to
in-memory ConfigMaps as the API server would (create, or merge patch). Prints JSON: records, the stored
bytes (keys and values, base64 as stored), bytes per record, chunks, the largest and mean write, the
generator's own records.csv for comparison, and the figures extrapolated to one hour.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from kinfer import stored_results

KINFER = str(Path(sys.executable).parent / "kinfer")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def wait_http(url: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.3)
    raise TimeoutError(url)


class Store:
    """Chunk ConfigMaps as the API server keeps them."""

    def __init__(self) -> None:
        self.cms: dict[int, dict[str, dict[str, str]]] = {}
        self.writes: list[int] = []

    def apply(self, write: stored_results.Write) -> None:
        body = {"data": write.data, "binaryData": write.binary}
        self.writes.append(len(json.dumps(body)))
        cm = self.cms.setdefault(write.chunk, {"data": {}, "binaryData": {}})
        for key, value in write.data.items():
            if value is None:
                cm["data"].pop(key, None)
            else:
                cm["data"][key] = value
        cm["binaryData"].update(write.binary)


async def run(duration: float, rps: float) -> dict[str, Any]:
    server_port, control_port = free_port(), free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        server = await asyncio.create_subprocess_exec(
            KINFER, "serve", "--format", "null", "--workers", "2", "--host", "127.0.0.1", "--port", str(server_port),
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        gen: asyncio.subprocess.Process | None = None
        try:
            await wait_http(f"http://127.0.0.1:{server_port}/v2/health/ready")
            base = f"http://127.0.0.1:{server_port}"
            gen = await asyncio.create_subprocess_exec(
                KINFER, "loadgen", f"{base}/gpu", "--rps", str(rps), "--duration", str(duration),
                "--server-metrics", f"{base}/metrics", "--control-port", str(control_port),
                "--output", f"{tmp}/out", "--linger", "60", "--quiet",
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
            control = f"http://127.0.0.1:{control_port}"
            await wait_http(f"{control}/api/status")
            store, stored = Store(), stored_results.Stored()
            async with aiohttp.ClientSession() as session:
                while True:
                    async with session.get(f"{control}/api/status?summary=1") as response:
                        status = await response.json()
                    since = stored.next_index(0)
                    async with session.get(f"{control}/api/records?since={since}") as response:
                        got = await response.json()
                    done = status["phase"] not in ("Pending", "Running")
                    write = stored_results.plan_write(stored, {0: got["records"]}, {0: status["summary"]}, final=done)
                    if write is not None:
                        store.apply(write)
                    if done:
                        break
                    await asyncio.sleep(1.0)
                async with session.post(f"{control}/api/stop", json={}) as response:
                    await response.read()
            records = stored.next_index(0)
            total = sum(stored_results.object_bytes(cm) for cm in store.cms.values())
            gz = sum(len(v) for cm in store.cms.values() for v in cm["binaryData"].values())
            csv_bytes = (Path(tmp) / "out" / "records.csv").stat().st_size
            per_record = total / max(records, 1)
            return {
                "records": records,
                "rps": rps,
                "storedBytes": total,
                "gzipBase64Bytes": gz,
                "bytesPerRecord": round(per_record, 1),
                "chunks": len(store.cms),
                "writes": len(store.writes),
                "largestWriteBytes": max(store.writes),
                "meanWriteBytes": round(sum(store.writes) / len(store.writes)),
                "generatorRecordsCsvBytes": csv_bytes,
                "serverColumnsFilled": sum(1 for r in stored.series(0) if r.get("serverCPU") is not None),
                "oneHourBytes": round(per_record * 3600),
                "oneHourChunks": -(-round(per_record * 3600) // stored_results.CHUNK_BYTES),
            }
        finally:
            for proc in (gen, server):
                if proc is not None and proc.returncode is None:
                    proc.terminate()
                    await asyncio.wait_for(proc.wait(), 30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of the run (600: ten minutes)")
    parser.add_argument("--rps", type=float, default=100.0)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.duration, args.rps)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
