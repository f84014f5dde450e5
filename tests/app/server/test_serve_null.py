"""``kinfer serve`` under gunicorn with the null backend: workers, metrics, readiness, robustness."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator

import numpy as np
import psutil
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.app.server.conftest import KINFER, Server, ServerFactory


def _png(width: int = 64, height: int = 48) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _metric(text: str, name: str, **labels: str) -> list[float]:
    """The values of every sample of ``name`` whose labels include ``labels``."""
    values = []
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            values.append(float(value))
    return values


def _worker_pids(server: Server) -> set[str]:
    text = server.get("/metrics").text
    return set(re.findall(r'kinfer_server_worker_resident_memory_bytes\{pid="(\d+)"\}', text))


def _both_workers_ready(server: Server, deadline: float) -> set[str]:
    """Wait until two workers have sampled themselves and loaded their model; their pids."""
    while len(pids := _worker_pids(server)) < 2 or \
            sum(_metric(server.get("/metrics").text, "kinfer_server_workers_ready")) < 2:
        assert time.monotonic() < deadline and server.proc.poll() is None, server.output()
        time.sleep(0.05)
    return pids


def test_metrics_aggregate_every_worker(serve: ServerFactory) -> None:
    server = serve("--format", "null", "--workers", "2", "--threads", "2")
    # both workers have booted, sampled themselves and loaded their model
    _both_workers_ready(server, time.monotonic() + 30)
    for _ in range(20):
        assert requests.get(server.url + "/gpu", timeout=10, headers={"Connection": "close"}).text == "ok"
    # whichever worker answers the scrape, it reports the sum over both
    for _ in range(6):
        text = requests.get(server.url + "/metrics", timeout=10, headers={"Connection": "close"}).text
        assert sum(_metric(text, "kinfer_server_requests_total", route="/gpu", code="200")) == 20
        assert _metric(text, "kinfer_server_workers_ready", model="null") == [2.0]
        assert sum(_metric(text, "kinfer_server_stage_duration_seconds_count", stage="infer")) == 20
        assert len(_metric(text, "kinfer_server_worker_cpu_seconds")) == 2


def test_a_worker_leaving_keeps_the_servers_counts_and_its_replacement_boots(serve: ServerFactory) -> None:
    """gunicorn replaces a worker that exits (SIGTERM to it, ``max_requests``); the metrics of the others,
    and the counters of the one that left, stay in the shared directory, and the new worker boots."""
    server = serve("--format", "null", "--workers", "2", "--threads", "2")
    first = _both_workers_ready(server, time.monotonic() + 30)
    for _ in range(20):
        assert requests.get(server.url + "/gpu", timeout=10, headers={"Connection": "close"}).text == "ok"
    leaving = sorted(first)[0]
    os.kill(int(leaving), signal.SIGTERM)
    deadline = time.monotonic() + 30
    while leaving in (now := _both_workers_ready(server, deadline)):
        assert time.monotonic() < deadline, server.output()
        time.sleep(0.05)
    assert len(now - first) == 1 and server.proc.poll() is None, server.output()
    text = server.get("/metrics").text
    assert sum(_metric(text, "kinfer_server_requests_total", route="/gpu", code="200")) == 20, text
    assert "Worker failed to boot" not in server.output()
    assert server.stop() == 0


def test_readiness_is_503_until_the_model_has_warmed_up(serve: ServerFactory) -> None:
    # the null backend's delay applies to the warm-up call too, so loading takes ~2 s
    server = serve("--format", "null", "--delay-ms", "2000", ready=False)
    deadline = time.monotonic() + 30
    first = None
    while first is None:
        assert time.monotonic() < deadline, server.output()
        try:
            first = server.get("/v2/health/ready")
        except requests.ConnectionError:
            time.sleep(0.02)
    assert first.status_code == 503
    assert server.get("/v2/health/live").status_code == 200
    server.wait_ready()
    assert server.get("/v2/health/ready").json() == {"ready": True}


def test_the_server_is_ready_only_while_every_worker_is(serve: ServerFactory) -> None:
    """A warm worker does not answer Ready for a sibling still loading: a pod turned Ready too early
    would send part of a generator's first requests to a worker answering 503."""
    server = serve("--format", "null", "--workers", "2", "--delay-ms", "1500")
    text = server.get("/metrics").text
    assert _metric(text, "kinfer_server_workers_ready", model="null") == [2.0], text
    master = psutil.Process(server.proc.pid)
    before = {child.pid for child in master.children()}
    os.kill(min(before), signal.SIGKILL)
    deadline = time.monotonic() + 30
    while len(now := {child.pid for child in master.children()} - before) < 1:  # reaped and replaced
        assert time.monotonic() < deadline, server.output()
        time.sleep(0.01)
    # the replacement warms up for 1.5 s: meanwhile both workers say "not ready", each for its reason
    answers = [requests.get(server.url + "/v2/health/ready", timeout=10, headers={"Connection": "close"})
               for _ in range(10)]  # fmt: skip
    assert [a.status_code for a in answers] == [503] * 10
    bodies = [a.json() for a in answers]
    assert {"ready": False, "workersReady": 1, "workers": 2} in bodies or all(b == {"ready": False} for b in bodies)
    model = requests.get(server.url + "/v2/models/null/ready", timeout=10, headers={"Connection": "close"})
    assert model.status_code == 503
    server.wait_ready()
    assert server.get("/v2/health/ready").json() == {"ready": True}
    assert _metric(server.get("/metrics").text, "kinfer_server_workers_ready", model="null") == [2.0]
    assert len(now) == 1 and server.proc.poll() is None, server.output()


def test_predict_and_v2_infer_answer_with_server_timing(serve: ServerFactory) -> None:
    server = serve("--format", "null", "--known-model", "ssd-mobilenet", "--threads", "4", "--max-batch-size", "4")
    resp = server.post("/predict", data=_png())
    assert resp.status_code == 200
    assert resp.json()["detections"][0]["label"] == "person"
    assert re.match(r"queue;dur=[\d.]+, preprocess;dur=[\d.]+, infer;dur=[\d.]+, postprocess;dur=[\d.]+",
                    resp.headers["Server-Timing"])  # fmt: skip
    body = {
        "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(_png()).decode()]}]
    }
    out = server.post("/v2/models/ssd-mobilenet/infer", json=body).json()
    assert {o["name"] for o in out["outputs"]} >= {"detection_boxes:0", "detection_scores:0"}
    assert server.post("/v2/models/other/infer", json=body).status_code == 404
    assert server.post("/predict", data=b"x" * 100, headers={"Content-Type": "image/png"}).status_code == 400


def test_body_over_the_limit_is_413(serve: ServerFactory) -> None:
    server = serve("--format", "null", "--max-body-bytes", "1024")
    resp = server.post("/predict", data=b"\0" * 4096)
    assert resp.status_code == 413
    assert resp.json()["error"] == "request body of 4096 bytes exceeds the limit of 1024 (--max-body-bytes)"
    assert server.get("/gpu").status_code == 200


def _chunks(data: bytes, size: int = 500) -> Iterator[bytes]:
    """A body ``requests`` sends with ``Transfer-Encoding: chunked`` (no ``Content-Length``)."""
    for i in range(0, len(data), size):
        yield data[i : i + size]


def test_chunked_uploads_are_read_whole_and_held_to_the_limit(serve: ServerFactory) -> None:
    server = serve("--format", "null", "--known-model", "ssd-mobilenet", "--max-body-bytes", "4096")
    image = _png(16, 12)
    assert len(image) < 4096
    resp = server.post("/predict", data=_chunks(image))
    assert resp.request.headers["Transfer-Encoding"] == "chunked"
    assert resp.status_code == 200, resp.text
    assert (resp.json()["height"], resp.json()["width"]) == (12, 16)
    resp = server.post("/predict", data=_chunks(b"\0" * 6000))
    assert resp.status_code == 413
    assert resp.json()["error"] == "request body exceeds the limit of 4096 bytes (--max-body-bytes)"
    resp = server.post("/predict", data=_chunks(b"\0" * 3000))
    assert resp.status_code == 400
    assert resp.json()["error"] == "not a decodable image: 3000 bytes in no format Pillow reads"
    infer = json.dumps({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["A" * 6000]}]})
    resp = server.post("/v2/models/ssd-mobilenet/infer", data=_chunks(infer.encode()))
    assert resp.status_code == 413, resp.text
    resp = server.post("/v2/models/ssd-mobilenet/infer", data=_chunks(b"{not json"))
    assert resp.status_code == 400
    assert resp.json()["error"] == 'body must be a JSON object {"inputs": [...]}'
    assert server.post("/predict", data=image).status_code == 200  # the worker still serves


_bodies = st.one_of(
    st.binary(max_size=2048),
    st.binary(max_size=64).map(lambda b: b"\x89PNG\r\n\x1a\n" + b),
    st.binary(max_size=64).map(lambda b: b"\xff\xd8\xff\xe0" + b),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=20,
    ).map(lambda v: json.dumps({"inputs": [v]}).encode()),
)


def test_fuzzed_bodies_never_kill_a_worker(serve: ServerFactory) -> None:
    server = serve("--format", "null", "--workers", "2", "--threads", "2", "--input-size", "4,4")
    pids_before = _worker_pids(server)
    session = requests.Session()

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(body=_bodies, path=st.sampled_from(["/predict", "/v2/models/null/infer"]))
    def post(body: bytes, path: str) -> None:
        resp = session.post(server.url + path, data=body, timeout=10)
        assert resp.status_code in (200, 400), (resp.status_code, resp.text)
        assert "error" in resp.json() or resp.status_code == 200

    post()
    assert server.get("/gpu").text == "ok"
    assert server.proc.poll() is None
    assert _worker_pids(server) >= pids_before
    assert "Worker exiting" not in server.output()
    assert "WORKER TIMEOUT" not in server.output()


def test_sigterm_shuts_down_gracefully(serve: ServerFactory) -> None:
    server = serve("--format", "null", "--workers", "2")
    assert server.get("/gpu").status_code == 200
    code = server.stop()
    assert code == 0, server.output()


def test_bad_flag_exits_2_with_one_line() -> None:
    result = subprocess.run([*KINFER, "serve", "--format", "null", "--workers", "0"],
                            capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "--workers" in result.stderr
