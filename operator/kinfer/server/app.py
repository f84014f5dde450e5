"""The Flask app: the seed's endpoints, ``/predict``, the upload page, Open Inference Protocol v2, metrics.

Handlers are thin: decode, pre-process, hand rows to the worker's ``ModelRuntime`` (which batches),
post-process. Per-stage times go to the request's WSGI environ, where ``MetricsMiddleware`` (wrapped
around the app) turns them, once, into the ``Server-Timing`` header and the stage histograms. HTTP
meaning lives in ``kinfer.server.errors`` and is mapped here.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from flask import Flask, Response, jsonify, request
from numpy.typing import NDArray
from werkzeug.exceptions import HTTPException

from kinfer.server import postprocess, readiness, v2
from kinfer.server.batching import BatchResult
from kinfer.server.config import ServerConfig
from kinfer.server.errors import (
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    PayloadTooLarge,
    RequestTimeout,
    ServerError,
)
from kinfer.server.metrics import ServerMetrics
from kinfer.server.middleware import BATCH_KEY, MetricsMiddleware, add_stage
from kinfer.server.modelspec import ModelSpec
from kinfer.server.nvml import GpuSampler
from kinfer.server.preprocess import decode_image, image_size
from kinfer.server.runtime import BackendFactory, ModelRuntime

log = logging.getLogger(__name__)

RUNTIME_KEY = "kinfer.runtime"

Number = TypeVar("Number", int, float)

#: Flask's own compact, key-sorted JSON (what ``jsonify`` writes), without its per-call encoder set-up.
_JSON = json.JSONEncoder(separators=(",", ":"), sort_keys=True)


def runtime_of(app: Flask) -> ModelRuntime:
    """The ``ModelRuntime`` of an app made by ``create_app``."""
    rt: ModelRuntime = app.extensions[RUNTIME_KEY]
    return rt


def _error(status: int, message: str) -> tuple[Response, int]:
    return jsonify(error=message), status


def _internal_error(what: str) -> tuple[Response, int]:
    """A 500 that tells the client nothing but an id; ``what`` (and the traceback) go to the log under it."""
    request_id = secrets.token_hex(8)
    log.error("request %s: %s %s -> 500: %s", request_id, request.method, request.path, what, exc_info=True)
    response = jsonify(error="internal error", requestId=request_id)
    response.headers["X-Request-Id"] = request_id
    return response, 500


def check_images(payloads: list[bytes], config: ServerConfig) -> None:
    """Refuse (413) a request with more images, or more decoded pixels, than one request may carry.

    Sizes come from the images' headers, before anything is decoded: six small PNGs that would decode
    to 8000x8000 each are refused at a few hundred bytes of parsing, not after a gigabyte of pixels.
    An image whose header cannot be read counts nothing here; decoding it then fails (400).
    """
    limit = config.images_per_request
    if len(payloads) > limit:
        raise PayloadTooLarge(
            f"{len(payloads)} images in one request exceed the limit of {limit} (--max-images-per-request)"
        )
    total = 0
    for payload in payloads:
        size = image_size(payload)
        if size is not None:
            total += size[0] * size[1]
    if total > config.max_pixels_per_request:
        raise PayloadTooLarge(
            f"the request's images decode to {total} pixels, over the limit of "
            f"{config.max_pixels_per_request} (--max-pixels-per-request)"
        )


def _json_response(body: dict[str, Any]) -> Response:
    """``jsonify(body)`` for the inference routes: the same bytes and headers, fewer steps."""
    return Response(_JSON.encode(body) + "\n", mimetype="application/json")


def _query_arg(environ: dict[str, Any], name: str, default: Number, kind: type[Number]) -> Number:
    """Query parameter ``name`` as an int or float, ``default`` when absent; a bad value is ``InvalidInput``.

    Most requests have no query string at all: werkzeug's parser (and the ``KeyError`` its
    ``MultiDict.get`` raises and catches per missing key) is then skipped.
    """
    if not environ.get("QUERY_STRING"):
        return default
    args = request.args
    if name not in args:
        return default
    raw = args[name]
    try:
        return kind(raw)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise InvalidInput(f"query parameter {name}={raw!r} is not {what}") from None


def _read_body(environ: dict[str, Any], max_bytes: int) -> bytes:
    """The request body, read from the server's stream in one call; over ``max_bytes`` is 413.

    werkzeug would wrap gunicorn's stream (which already stops where the body ends) in a
    ``LimitedStream`` and copy it chunk by chunk, which here costs about as much as the JSON response.
    A chunked body (no ``Content-Length``) is read up to one byte past the limit, so that an oversized
    one is refused as such rather than cut off and reported as a broken image.
    """
    stream = environ["wsgi.input"]
    declared: str = environ.get("CONTENT_LENGTH") or ""
    if declared.isdigit() and not environ.get("HTTP_TRANSFER_ENCODING"):
        length = int(declared)
        if length > max_bytes:
            raise PayloadTooLarge(f"request body of {length} bytes exceeds the limit of {max_bytes} (--max-body-bytes)")
        body: bytes = stream.read(length)
        _check_read_in_time(environ)
        return body
    if not environ.get("wsgi.input_terminated"):
        return b""  # no length, and a server that does not end the stream: nothing can be read safely
    body = stream.read(max_bytes + 1)
    _check_read_in_time(environ)
    if len(body) > max_bytes:
        raise PayloadTooLarge(f"request body exceeds the limit of {max_bytes} bytes (--max-body-bytes)")
    return body


def _check_read_in_time(environ: dict[str, Any]) -> None:
    """408 when the server's socket stopped reading at ``--request-read-timeout`` (the body is cut short)."""
    sock = environ.get("gunicorn.socket")
    if sock is not None and getattr(sock, "timed_out", False):
        raise RequestTimeout(f"request body not received within {sock.limit:g} s (--request-read-timeout)")


def _is_multipart(environ: dict[str, Any]) -> bool:
    """Whether the body is a ``multipart/form-data`` upload (``request.mimetype``, without parsing options)."""
    content_type: str = environ.get("CONTENT_TYPE", "")
    return content_type.partition(";")[0].strip().lower() == "multipart/form-data"


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
    metrics = ServerMetrics(spec.name, gpus=GpuSampler())
    rt = ModelRuntime(spec, config, metrics, dataset, backend_factory)
    app.extensions[RUNTIME_KEY] = rt
    page = resources.files("kinfer.server").joinpath("static/index.html").read_text(encoding="utf-8")

    # Every step on the inference routes is paid cold: the model call in between evicts the caches, so
    # the request's own path is kept short (the WSGI environ taken once, not through ``request`` per stage).
    def run_rows(rows: NDArray[np.generic], environ: dict[str, Any]) -> BatchResult:
        result = rt.infer(rows)
        environ[BATCH_KEY] = result.batch_size
        add_stage(environ, "queue", result.queue_s)
        add_stage(environ, "infer", result.infer_s)
        return result

    def decode_rows(
        payloads: list[bytes], environ: dict[str, Any]
    ) -> tuple[NDArray[np.generic], list[tuple[int, int]]]:
        check_images(payloads, config)
        start = time.perf_counter()
        images = [decode_image(p) for p in payloads]
        prepared = [rt.prepare(img) for img in images]
        rows = prepared[0][np.newaxis] if len(prepared) == 1 else np.stack(prepared)
        add_stage(environ, "preprocess", time.perf_counter() - start)
        return rows, [(img.shape[0], img.shape[1]) for img in images]

    def check_model(name: str) -> None:
        if name != rt.spec.name:
            raise ModelNotFound(f"model {name!r} not found (this server serves {rt.spec.name!r})")

    @app.errorhandler(ServerError)
    def _server_error(exc: ServerError) -> tuple[Response, int]:
        if exc.status >= 500 and not isinstance(exc, ModelNotReady):
            return _internal_error(exc.message)
        return _error(exc.status, exc.message)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> tuple[Response, int]:
        return _error(exc.code or 500, exc.description or exc.name)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> tuple[Response, int]:
        return _internal_error(f"unhandled {type(exc).__name__}: {exc}")

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
            run_rows(rt.random_image()[np.newaxis], request.environ)
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
        environ = request.environ
        threshold = _query_arg(environ, "threshold", 0.5, float)
        top_k = _query_arg(environ, "top_k", 5, int)
        # Only multipart bodies are parsed as forms: any other body is the image itself, whatever
        # its Content-Type says (curl --data-binary sends x-www-form-urlencoded).
        upload = None
        if _is_multipart(environ):
            upload = next(iter(request.files.values()), None)
            _check_read_in_time(environ)  # a form cut short by the read deadline is 408, not a missing file
        data = upload.read() if upload is not None else _read_body(environ, config.max_body_bytes)
        with rt.batcher.expecting():
            rows, sizes = decode_rows([data], environ)
            result = run_rows(rows, environ)
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
        add_stage(environ, "postprocess", time.perf_counter() - start)
        return _json_response(body)

    # --- Open Inference Protocol v2 -------------------------------------------------------------
    @app.get("/v2")
    def v2_server() -> Response:
        from kinfer import __version__

        return jsonify(name="kinfer", version=__version__, extensions=[])

    @app.get("/v2/health/live")
    def v2_live() -> Response:
        return jsonify(live=True)

    def server_ready() -> tuple[bool, dict[str, Any]]:
        """Ready when this worker and all its siblings are warm (``kinfer.server.readiness``)."""
        if not rt.ready:
            return False, {}
        warm = readiness.workers_ready()
        if warm is None or warm >= config.workers:
            return True, {}
        return False, {"workersReady": warm, "workers": config.workers}

    @app.get("/v2/health/ready")
    def v2_ready() -> tuple[Response, int]:
        if rt.error is not None:
            # A model that failed to load never becomes ready: say why, so that a waiting caller stops.
            return jsonify(ready=False, error=rt.error), 503
        ready, detail = server_ready()
        return jsonify(ready=ready, **detail), 200 if ready else 503

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
        ready, detail = server_ready()
        return jsonify(name=model, ready=ready, **detail), 200 if ready else 503

    @app.post("/v2/models/<model>/infer")
    def v2_infer(model: str) -> Response:
        check_model(model)
        rt.check_ready()
        assert rt.backend is not None
        environ = request.environ
        try:
            body = json.loads(_read_body(environ, config.max_body_bytes))
        except ValueError:  # not JSON, or not UTF-8: parse_request names what the body must be
            body = None
        tensor, names = v2.parse_request(body)
        request_id = body.get("id") if isinstance(body, dict) else None
        with rt.batcher.expecting():
            if str(tensor.get("datatype", "")).upper() == "BYTES":
                rows, _ = decode_rows(v2.image_payloads(tensor, config.images_per_request), environ)
            else:
                start = time.perf_counter()
                rows = v2.numeric_rows(tensor, rt.spec.row_shape, rt.backend.input_dtype)
                if len(rows) > config.images_per_request:
                    raise PayloadTooLarge(
                        f"{len(rows)} rows in one request exceed the limit of {config.images_per_request}"
                        " (--max-images-per-request)"
                    )
                add_stage(environ, "preprocess", time.perf_counter() - start)
            result = run_rows(rows, environ)
        start = time.perf_counter()
        outputs = v2.encode_outputs(result.outputs, names)
        add_stage(environ, "postprocess", time.perf_counter() - start)
        return _json_response({"model_name": rt.spec.name, "model_version": "1", "id": request_id, "outputs": outputs})

    @app.get("/metrics")
    def prometheus() -> Response:
        payload, content_type = metrics.exposition()
        return Response(payload, content_type=content_type)

    # Server-Timing, request metrics and the in-flight gauge: around Flask, not through its hooks
    app.wsgi_app = MetricsMiddleware(app.wsgi_app, metrics)  # type: ignore[method-assign]
    metrics.start_sampling()
    rt.start(background=background)
    return app
