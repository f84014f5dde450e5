"""A client batch (one v2 BYTES tensor of N images) is one model call of N rows: the batch-size histogram
and the Server-Timing header say so."""

from __future__ import annotations

import base64
import re

from flask.testing import FlaskClient

from tests.unit.server.conftest import image_bytes


def _sample(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.M)
    assert match, name
    return float(match.group(1))


def test_a_v2_request_of_four_images_is_one_model_call_of_four_in_histogram_and_server_timing(
    client: FlaskClient,
) -> None:
    images = [base64.b64encode(image_bytes(40, 30)).decode()] * 4
    body = {"inputs": [{"name": "image", "shape": [4], "datatype": "BYTES", "data": images}]}
    resp = client.post("/v2/models/null/infer", json=body)
    assert resp.status_code == 200
    timing = resp.headers["Server-Timing"]
    assert timing.startswith("queue;dur=") and timing.endswith(', batch;desc="4"')
    assert {o["name"]: o["shape"][0] for o in resp.get_json()["outputs"]}["num_detections"] == 4
    resp.close()
    single = client.get("/gpu")
    assert "batch" not in single.headers["Server-Timing"]  # one image: the four stages only
    single.close()
    text = client.get("/metrics").get_data(as_text=True)
    assert _sample(text, 'kinfer_server_batch_size_count{model="null"}') == 2.0
    assert _sample(text, 'kinfer_server_batch_size_sum{model="null"}') == 5.0
    assert _sample(text, 'kinfer_server_batch_size_bucket{le="4.0",model="null"}') == 2.0
    assert _sample(text, 'kinfer_server_batch_size_bucket{le="2.0",model="null"}') == 1.0
