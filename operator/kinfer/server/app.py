"""The Flask app: the seed's endpoints, ``/predict``, the upload page, Open Inference Protocol v2, metrics.

Handlers are thin: decode, pre-process, hand rows to the worker's ``ModelRuntime`` (which batches),
post-process. Per-stage times go to the request's WSGI environ, where ``MetricsMiddleware`` (wrapped
around the app) turns them, once, into the ``Server-Timing`` header and the stage histograms. HTTP
meaning lives in ``kinfer.server.errors`` and is mapped here.
"""

from __future__ import annotations

import logging
import time
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from flask import Flask, Response, jsonify, request
from numpy.typing import NDArray
from werkzeug.exceptions import HTTPException

from kinfer.server import postprocess, v2
from kinfer.server.batching import BatchResult
from kinfer.server.config import ServerConfig
from kinfer.server.errors import InvalidInput, ModelNotFound, ServerError
from kinfer.server.metrics import ServerMetrics
from kinfer.server.middleware import MetricsMiddleware, add_stage
from kinfer.server.modelspec import ModelSpec
from kinfer.server.preprocess import decode_image
from kinfer.server.runtime import BackendFactory, ModelRuntime

log = logging.getLogger(__name__)

RUNTIME_KEY = "kinfer.runtime"


def runtime_of(app: Flask) -> ModelRuntime:
    """The ``ModelRuntime`` of an app made by ``create_app``."""
    rt: ModelRuntime = app.extensions[RUNTIME_KEY]
    return rt


def _stage(name: str, seconds: float) -> None:
    add_stage(request.environ, name, seconds)


def _error(status: int, message: str) -> tuple[Response, int]:
    return jsonify(error=message), status


def _float_arg(name: str, default: float) -> float:
    raw = request.args.get(name)
    try:
        return default if raw is None else float(raw)
    except ValueError:
        raise InvalidInput(f"query parameter {name}={raw!r} is not a number") from None


def _int_arg(name: str, default: int) -> int:
    raw = request.args.get(name)
    try:
        return default if raw is None else int(raw)
    except ValueError:
        raise InvalidInput(f"query parameter {name}={raw!r} is not an integer") from None


def create_app(
    config: ServerConfig,
    spec: ModelSpec,
    dataset: Path | None = None,
    *,
    backend_factory: BackendFactory | None = None,
    background: bool = True,
) -> Flask:
    """Build the app and start loading its model (in a thread unless ``background`` is False)."""
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    metrics = ServerMetrics(spec.name)
    rt = ModelRuntime(spec, config, metrics, dataset, backend_factory)
    app.extensions[RUNTIME_KEY] = rt
    page = resources.files("kinfer.server").joinpath("static/index.html").read_text(encoding="utf-8")

    def run_rows(rows: NDArray[np.generic]) -> BatchResult:
        result = rt.infer(rows)
        _stage("queue", result.queue_s)
        _stage("infer", result.infer_s)
        return result

    def decode_rows(payloads: list[bytes]) -> tuple[NDArray[np.generic], list[tuple[int, int]]]:
        start = time.perf_counter()
        images = [decode_image(p) for p in payloads]
        prepared = [rt.prepare(img) for img in images]
        rows = prepared[0][np.newaxis] if len(prepared) == 1 else np.stack(prepared)
        _stage("preprocess", time.perf_counter() - start)
        return rows, [(int(img.shape[0]), int(img.shape[1])) for img in images]

    def check_model(name: str) -> None:
        if name != rt.spec.name:
            raise ModelNotFound(f"model {name!r} not found (this server serves {rt.spec.name!r})")

    @app.errorhandler(ServerError)
    def _server_error(exc: ServerError) -> tuple[Response, int]:
        if exc.status >= 500:
            log.warning("%s %s -> %d: %s", request.method, request.path, exc.status, exc.message)
        return _error(exc.status, exc.message)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> tuple[Response, int]:
        return _error(exc.code or 500, exc.description or exc.name)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> tuple[Response, int]:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return _error(500, f"internal error: {type(exc).__name__}: {exc}")

    # --- the seed's endpoints -------------------------------------------------------------------
    @app.get("/helloworld")
    def helloworld() -> str:
        return "Hello World!"

    @app.get("/gpu1")
    def gpu1() -> str:
        return "ok"

    @app.get("/gpu")
    def gpu() -> str:
        rt.check_ready()
        with rt.batcher.expecting():
            run_rows(rt.random_image()[np.newaxis])
        return "ok"

    # --- images in, detections or classes out ----------------------------------------------------
    @app.get("/")
    def index() -> Response:
        return Response(page, mimetype="text/html")

    @app.get("/info")
    def info() -> Response:
        s = rt.spec
        return jsonify(
            model=s.name, format=s.format, task=s.task, inputSize=list(s.input_size), layout=s.layout,
            weights=s.weights, note=s.note, ready=rt.ready, error=rt.error,
        )  # fmt: skip

    @app.post("/predict")
    def predict() -> Response:
        rt.check_ready()
        threshold = _float_arg("threshold", 0.5)
        top_k = _int_arg("top_k", 5)
        # Only multipart bodies are parsed as forms: any other body is the image itself, whatever
        # its Content-Type says (curl --data-binary sends x-www-form-urlencoded).
        upload = next(iter(request.files.values()), None) if request.mimetype == "multipart/form-data" else None
        data = upload.read() if upload is not None else request.get_data(parse_form_data=False)
        with rt.batcher.expecting():
            rows, sizes = decode_rows([data])
            result = run_rows(rows)
        start = time.perf_counter()
        s = rt.spec
        body: dict[str, Any] = {
            "model": s.name, "task": s.task, "weights": s.weights, "note": s.note,
            "height": sizes[0][0], "width": sizes[0][1],
        }  # fmt: skip
        if s.task == "detection":
            body["detections"] = postprocess.detections(result.outputs, s, 0, threshold)
        else:
            body["classes"] = postprocess.top_classes(result.outputs, s, 0, top_k)
        _stage("postprocess", time.perf_counter() - start)
        return jsonify(body)

    # --- Open Inference Protocol v2 -------------------------------------------------------------
    @app.get("/v2")
    def v2_server() -> Response:
        from kinfer import __version__

        return jsonify(name="kinfer", version=__version__, extensions=[])

    @app.get("/v2/health/live")
    def v2_live() -> Response:
        return jsonify(live=True)

    @app.get("/v2/health/ready")
    def v2_ready() -> tuple[Response, int]:
        return jsonify(ready=rt.ready), 200 if rt.ready else 503

    @app.get("/v2/models/<model>")
    def v2_metadata(model: str) -> Response:
        check_model(model)
        rt.check_ready()
        assert rt.backend is not None
        return jsonify(
            name=rt.spec.name,
            versions=["1"],
            platform=rt.spec.format,
            inputs=[
                {"name": "image", "datatype": "BYTES", "shape": [-1]},
                v2.tensor_metadata(rt.backend.input),
            ],
            outputs=[v2.tensor_metadata(o) for o in rt.backend.outputs],
        )

    @app.get("/v2/models/<model>/ready")
    def v2_model_ready(model: str) -> tuple[Response, int]:
        check_model(model)
        return jsonify(name=model, ready=rt.ready), 200 if rt.ready else 503

    @app.post("/v2/models/<model>/infer")
    def v2_infer(model: str) -> Response:
        check_model(model)
        rt.check_ready()
        assert rt.backend is not None
        body = request.get_json(silent=True, force=True)
        tensor, names = v2.parse_request(body)
        request_id = body.get("id") if isinstance(body, dict) else None
        with rt.batcher.expecting():
            if str(tensor.get("datatype", "")).upper() == "BYTES":
                rows, _ = decode_rows(v2.image_payloads(tensor))
            else:
                start = time.perf_counter()
                rows = v2.numeric_rows(tensor, rt.spec.row_shape, rt.backend.input_dtype)
                _stage("preprocess", time.perf_counter() - start)
            result = run_rows(rows)
        start = time.perf_counter()
        outputs = v2.encode_outputs(result.outputs, names)
        _stage("postprocess", time.perf_counter() - start)
        return jsonify(model_name=rt.spec.name, model_version="1", id=request_id, outputs=outputs)

    @app.get("/metrics")
    def prometheus() -> Response:
        payload, content_type = metrics.exposition()
        return Response(payload, content_type=content_type)

    # Server-Timing, request metrics and the in-flight gauge: around Flask, not through its hooks
    app.wsgi_app = MetricsMiddleware(app.wsgi_app, metrics)  # type: ignore[method-assign]
    metrics.start_sampling()
    rt.start(background=background)
    return app
