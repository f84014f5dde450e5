"""The app's endpoints over the null backend, through the Flask test client."""

from __future__ import annotations

import base64
import io
import os
import re
import threading
from pathlib import Path

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.datastructures import FileStorage
from werkzeug.test import encode_multipart

from kinfer.server import readiness
from kinfer.server.app import runtime_of
from kinfer.server.backends.null import NullBackend
from kinfer.server.metrics import MULTIPROC_ENV
from tests.unit.server.conftest import MakeApp, image_bytes

TIMING = re.compile(r"^queue;dur=\d+\.\d\d, preprocess;dur=\d+\.\d\d, infer;dur=\d+\.\d\d, postprocess;dur=\d+\.\d\d$")


def _timings(header: str) -> dict[str, float]:
    return {k: float(v) for k, v in re.findall(r"(\w+);dur=([\d.]+)", header)}


def test_seed_endpoints_answer_like_the_seed(client: FlaskClient) -> None:
    assert client.get("/helloworld").get_data(as_text=True) == "Hello World!"
    assert client.get("/gpu1").get_data(as_text=True) == "ok"
    resp = client.get("/gpu")
    assert resp.status_code == 200
    assert resp.get_data(as_text=True) == "ok"


def test_every_response_carries_server_timing_with_the_four_stages(client: FlaskClient) -> None:
    for resp in (
        client.get("/helloworld"),
        client.get("/gpu"),
        client.post("/predict", data=b"not an image"),
        client.get("/no/such/route"),
    ):
        assert TIMING.match(resp.headers["Server-Timing"]), resp.headers["Server-Timing"]


def test_predict_returns_detections_and_timings_of_each_stage(make_app: MakeApp) -> None:
    client = make_app(known_model="ssd-mobilenet", delay_ms=2).test_client()
    resp = client.post("/predict?threshold=0.5", data=image_bytes(80, 60, "JPEG"))
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["task"] == "detection"
    assert (body["width"], body["height"]) == (80, 60)
    assert body["detections"] == [{"box": [0.25, 0.25, 0.75, 0.75], "classId": 1, "label": "person", "score": 0.9}]
    stages = _timings(resp.headers["Server-Timing"])
    assert stages["infer"] >= 2.0
    assert stages["preprocess"] > 0


def test_predict_threshold_filters_detections(client: FlaskClient) -> None:
    resp = client.post("/predict?threshold=0.95", data=image_bytes())
    assert resp.get_json()["detections"] == []


def test_predict_accepts_a_multipart_upload_like_the_page_sends(client: FlaskClient) -> None:
    import io

    data = {"file": (io.BytesIO(image_bytes(fmt="PNG", mode="L")), "gray.png")}
    resp = client.post("/predict", data=data, content_type="multipart/form-data")
    assert resp.status_code == 200
    assert len(resp.get_json()["detections"]) == 1
    # media types are case-insensitive
    body = encode_multipart({"file": FileStorage(io.BytesIO(image_bytes(fmt="PNG")), "upper.png")}, "b0undary")[1]
    resp = client.post("/predict", data=body, content_type="Multipart/Form-Data; boundary=b0undary")
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert len(resp.get_json()["detections"]) == 1


def test_predict_converts_grayscale_and_rgba_images(client: FlaskClient) -> None:
    for mode in ("L", "RGBA"):
        assert client.post("/predict", data=image_bytes(mode=mode)).status_code == 200


def test_classification_model_returns_top_k_classes(make_app: MakeApp) -> None:
    client = make_app(task="classification", input_size=(32, 32), preprocess="imagenet-vgg").test_client()
    body = client.post("/predict?top_k=3", data=image_bytes()).get_json()
    assert len(body["classes"]) == 3
    assert body["classes"][0]["score"] == 0.9


def test_non_image_body_is_400_with_json_error(client: FlaskClient) -> None:
    resp = client.post("/predict", data=b"\x89PNG\r\n\x1a\n truncated")
    assert resp.status_code == 400
    assert "error" in resp.get_json()


def test_bad_query_parameter_is_400(client: FlaskClient) -> None:
    resp = client.post("/predict?threshold=high", data=image_bytes())
    assert resp.status_code == 400
    assert resp.get_json()["error"] == "query parameter threshold='high' is not a number"
    resp = client.post("/predict?other=1&top_k=2.5", data=image_bytes())
    assert resp.status_code == 400
    assert resp.get_json()["error"] == "query parameter top_k='2.5' is not an integer"


def test_unrelated_query_parameters_keep_the_defaults(client: FlaskClient) -> None:
    default = client.post("/predict", data=image_bytes()).get_json()
    assert len(default["detections"]) == 1  # the null backend's one box, score 0.9 >= 0.5
    assert client.post("/predict?verbose=1", data=image_bytes()).get_json() == default
    assert client.post("/predict?threshold=0.95&verbose=1", data=image_bytes()).get_json()["detections"] == []


def test_inference_responses_are_byte_for_byte_what_jsonify_writes(app: Flask) -> None:
    client = app.test_client()
    image = {"name": "image", "datatype": "BYTES", "shape": [1], "data": [base64.b64encode(image_bytes()).decode()]}
    for resp in (
        client.post("/predict", data=image_bytes()),
        client.post("/v2/models/null/infer", json={"inputs": [image]}),
    ):
        assert resp.status_code == 200, resp.get_data(as_text=True)
        with app.app_context():
            expected = app.json.response(resp.get_json())
        assert resp.get_data() == expected.get_data()
        assert resp.headers["Content-Type"] == expected.headers["Content-Type"] == "application/json"


def test_body_over_the_limit_is_413(make_app: MakeApp) -> None:
    client = make_app(max_body_bytes=1000).test_client()
    resp = client.post("/predict", data=b"x" * 5000)
    assert resp.status_code == 413
    assert resp.get_json() == {"error": "request body of 5000 bytes exceeds the limit of 1000 (--max-body-bytes)"}


def test_a_body_of_unknown_length_on_an_unterminated_stream_is_not_read(client: FlaskClient) -> None:
    # no Content-Length and a server that does not say it ends the stream: reading could block forever
    resp = client.post("/predict", input_stream=io.BytesIO(b"x" * 100))
    assert resp.status_code == 400
    assert "not a decodable image" in resp.get_json()["error"]


def test_unknown_model_is_404(client: FlaskClient) -> None:
    assert client.get("/v2/models/nope").status_code == 404
    assert client.get("/v2/models/nope/ready").status_code == 404
    resp = client.post("/v2/models/nope/infer", json={"inputs": []})
    assert resp.status_code == 404
    assert "nope" in resp.get_json()["error"]


def test_unknown_route_is_404_json(client: FlaskClient) -> None:
    resp = client.get("/nothing-here")
    assert resp.status_code == 404
    assert "error" in resp.get_json()


class _Gate(NullBackend):
    """A null backend whose ``load`` waits until the test opens the gate."""

    gate = threading.Event()

    def load(self) -> None:
        assert self.gate.wait(10)
        super().load()


def test_readiness_is_503_until_the_model_is_loaded(make_app: MakeApp) -> None:
    from kinfer.server.backends.base import BackendOptions

    _Gate.gate.clear()
    app = make_app(background=True, backend_factory=lambda spec: _Gate(spec, BackendOptions()))
    client = app.test_client()
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").status_code == 503
    assert client.get("/v2/models/null/ready").status_code == 503
    assert client.get("/gpu").status_code == 503
    assert client.post("/predict", data=image_bytes()).status_code == 503
    _Gate.gate.set()
    assert runtime_of(app).wait_ready(10)
    assert client.get("/v2/health/ready").get_json() == {"ready": True}
    assert client.get("/v2/models/null/ready").status_code == 200


def test_a_warm_worker_is_not_ready_while_a_sibling_still_loads(
    make_app: MakeApp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under gunicorn each warm worker leaves a marker in the shared directory; the server is ready
    when there is one per ``--workers`` (a restarted worker's marker is removed on ``child_exit``)."""
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    client = make_app(workers=2).test_client()  # loads synchronously: this worker is warm
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"ready-{os.getpid()}"]
    resp = client.get("/v2/health/ready")
    assert (resp.status_code, resp.get_json()) == (503, {"ready": False, "workersReady": 1, "workers": 2})
    assert client.get("/v2/models/null/ready").status_code == 503
    readiness.mark_ready(4242)  # the sibling is warm
    assert client.get("/v2/health/ready").get_json() == {"ready": True}
    assert client.get("/v2/models/null/ready").status_code == 200
    readiness.forget(4242)  # ... and exits: gunicorn starts a new one, which loads
    assert client.get("/v2/health/ready").status_code == 503


class _Failing(NullBackend):
    """Warms up fine, then raises once ``failing`` is set."""

    failing = False

    def predict(self, batch: np.ndarray) -> dict[str, np.ndarray]:  # type: ignore[override]
        if self.failing:
            raise RuntimeError("device on fire")
        return super().predict(batch)


def test_backend_exception_is_500_with_a_request_id_and_the_app_keeps_serving(
    make_app: MakeApp, caplog: pytest.LogCaptureFixture
) -> None:
    from kinfer.server.backends.base import BackendOptions

    _Failing.failing = False
    app = make_app(backend_factory=lambda spec: _Failing(spec, BackendOptions()))
    client = app.test_client()
    _Failing.failing = True
    resp = client.post("/predict", data=image_bytes())
    assert resp.status_code == 500
    body = resp.get_json()
    assert body["error"] == "internal error"
    assert "device on fire" not in resp.get_data(as_text=True)
    assert resp.headers["X-Request-Id"] == body["requestId"]
    assert any(body["requestId"] in r.getMessage() and "device on fire" in r.getMessage() for r in caplog.records)
    assert client.get("/helloworld").status_code == 200
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'kinfer_server_inference_errors_total{model="null"} 1.0' in metrics
    _Failing.failing = False
    assert client.get("/gpu").status_code == 200


def test_model_that_fails_to_load_stays_unready_and_says_why(make_app: MakeApp) -> None:
    from kinfer.server.backends.base import BackendOptions

    class Broken(NullBackend):
        def load(self) -> None:
            raise FileNotFoundError("model.pb")

    app = make_app(backend_factory=lambda spec: Broken(spec, BackendOptions()))
    resp = app.test_client().get("/gpu")
    assert resp.status_code == 503
    assert "model.pb" in resp.get_json()["error"]


def test_v2_metadata_describes_the_model_tensors(make_app: MakeApp) -> None:
    client = make_app(known_model="ssd-mobilenet").test_client()
    assert client.get("/v2/health/live").get_json() == {"live": True}
    meta = client.get("/v2/models/ssd-mobilenet").get_json()
    assert meta["name"] == "ssd-mobilenet"
    assert {"name": "image_tensor:0", "datatype": "UINT8", "shape": [-1, 300, 300, 3]} in meta["inputs"]
    assert [o["name"] for o in meta["outputs"]] == [
        "num_detections:0", "detection_boxes:0", "detection_scores:0", "detection_classes:0",
    ]  # fmt: skip


def test_v2_infer_accepts_base64_images_and_answers_outputs(client: FlaskClient) -> None:
    images = [base64.b64encode(image_bytes(40, 30, fmt)).decode() for fmt in ("PNG", "JPEG")]
    body = {"id": "r1", "inputs": [{"name": "image", "shape": [2], "datatype": "BYTES", "data": images}]}
    resp = client.post("/v2/models/null/infer", json=body)
    assert resp.status_code == 200
    out = resp.get_json()
    assert out["model_name"] == "null"
    assert out["id"] == "r1"
    by_name = {o["name"]: o for o in out["outputs"]}
    assert by_name["detection_boxes"]["shape"] == [2, 10, 4]
    assert by_name["detection_scores"]["datatype"] == "FP32"
    assert by_name["num_detections"]["data"] == [1.0, 1.0]


def test_v2_infer_accepts_a_raw_uint8_tensor_of_the_input_shape(make_app: MakeApp) -> None:
    client = make_app(input_size=(4, 5)).test_client()
    data = list(range(4 * 5 * 3))
    body = {
        "inputs": [{"name": "input", "shape": [1, 4, 5, 3], "datatype": "UINT8", "data": data}],
        "outputs": [{"name": "detection_scores"}],
    }
    out = client.post("/v2/models/null/infer", json=body).get_json()
    assert [o["name"] for o in out["outputs"]] == ["detection_scores"]


def test_v2_infer_rejects_bad_tensors_with_400(client: FlaskClient) -> None:
    bad_bodies = [
        b"not json",
        b"[1, 2]",
        b'{"inputs": []}',
        b'{"inputs": [{"datatype": "BYTES", "data": ["***"]}]}',
        b'{"inputs": [{"datatype": "UINT8", "shape": [1, 2, 2, 3], "data": [1, 2]}]}',
        b'{"inputs": [{"datatype": "COMPLEX", "shape": [1], "data": [1]}]}',
        b'{"inputs": [{"datatype": "BYTES", "data": ["aGVsbG8="]}]}',
    ]
    for raw in bad_bodies:
        resp = client.post("/v2/models/null/infer", data=raw, content_type="application/json")
        assert resp.status_code == 400, (raw, resp.get_json())
        assert "error" in resp.get_json()


def test_metrics_count_requests_by_route_and_code_and_record_stages(client: FlaskClient) -> None:
    # metrics are recorded when the server closes the response (WSGI close), after it has been sent
    client.get("/gpu").close()
    client.post("/predict", data=b"junk").close()
    unclosed = client.post("/predict", data=image_bytes())
    text = client.get("/metrics").get_data(as_text=True)
    assert 'kinfer_server_requests_total{code="200",route="/predict"}' not in text
    unclosed.close()
    text = client.get("/metrics").get_data(as_text=True)
    assert 'kinfer_server_requests_total{code="200",route="/predict"} 1.0' in text
    assert 'kinfer_server_requests_total{code="200",route="/gpu"} 1.0' in text
    assert 'kinfer_server_requests_total{code="400",route="/predict"} 1.0' in text
    assert 'kinfer_server_stage_duration_seconds_count{model="null",stage="infer"} 2.0' in text
    assert 'kinfer_server_stage_duration_seconds_count{model="null",stage="postprocess"} 1.0' in text
    assert 'kinfer_server_batch_size_count{model="null"}' in text
    assert 'kinfer_server_workers_ready{model="null"} 1.0' in text
    assert "kinfer_server_worker_resident_memory_bytes" in text


def test_upload_page_and_info_describe_the_model(make_app: MakeApp) -> None:
    client = make_app(known_model="ssdlite-person").test_client()
    page = client.get("/")
    assert page.status_code == 200
    assert b"<canvas" in page.data
    info = client.get("/info").get_json()
    assert info["model"] == "ssdlite-mobilenetv2-person"
    assert info["ready"] is True


def test_app_fixture_is_ready(app: Flask) -> None:
    assert runtime_of(app).ready


def _sample(text: str, name: str) -> float:
    values = [float(line.rpartition(" ")[2]) for line in text.splitlines() if line.startswith(name)]
    assert len(values) == 1, (name, values)
    return values[0]


def test_in_flight_gauge_counts_a_request_until_its_response_is_closed(make_app: MakeApp) -> None:
    client = make_app(max_body_bytes=1000).test_client()
    pending = client.post("/predict", data=image_bytes())
    scrape = client.get("/metrics")
    # the scrape itself is in flight too
    assert _sample(scrape.get_data(as_text=True), "kinfer_server_requests_in_flight") == 2.0
    scrape.close()
    pending.close()
    for resp in (
        client.get("/gpu"),
        client.post("/predict", data=b"junk"),  # 400
        client.post("/predict", data=b"x" * 5000),  # 413
        client.get("/nowhere"),  # 404
        client.get("/v2/models/other/ready"),  # 404 from the handler
    ):
        resp.close()
    text = client.get("/metrics").get_data(as_text=True)
    assert _sample(text, "kinfer_server_requests_in_flight") == 1.0  # only this scrape


def test_batch_sizes_reach_the_histogram_by_the_next_scrape(client: FlaskClient) -> None:
    for _ in range(3):
        client.get("/gpu").close()
    unclosed = client.post("/predict", data=image_bytes())  # its model call ran; its response is not closed
    text = client.get("/metrics").get_data(as_text=True)
    assert _sample(text, 'kinfer_server_batch_size_count{model="null"}') == 4.0
    assert _sample(text, 'kinfer_server_batch_size_sum{model="null"}') == 4.0
    unclosed.close()
