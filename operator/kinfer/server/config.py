"""The server's settings (one frozen dataclass) and how they resolve to a model spec.

``kinfer serve`` fills ``ServerConfig`` from flags and ``KINFER_SERVE_*`` variables and validates it
in the master, before any worker starts, so that a bad flag is one stderr line and exit code 2.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from kinfer.server.backends.base import BackendOptions
from kinfer.server.errors import InvalidInput
from kinfer.server.modelspec import (
    FORMATS,
    KNOWN_MODELS,
    TASKS,
    ModelSpec,
    Task,
    format_of_path,
    guess_roles,
    parse_layout,
    read_model_dir,
    spec_from_json,
)
from kinfer.server.preprocess import PREPROCESSORS

#: ``--max-images-per-request`` is at least this by default, so a batch client works with batching off.
DEFAULT_MIN_IMAGES_PER_REQUEST = 32


@dataclass(frozen=True)
class ServerConfig:
    """Everything ``kinfer serve`` can be told. None means "from model.json / the known model"."""

    model: str | None = None
    format: str | None = None
    known_model: str | None = None
    model_name: str | None = None
    task: str | None = None
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    input_size: tuple[int, int] | None = None
    #: input tensor layout, ``NHWC`` or ``NCHW`` (a known model or model.json says; default NHWC).
    layout: str | None = None
    preprocess: str | None = None
    dataset: str | None = None
    workers: int = 1
    threads: int = 1
    max_batch_size: int = 1
    max_delay_ms: float = 5.0
    host: str = "0.0.0.0"
    port: int = 5000
    delay_ms: float = 0.0
    delay_distribution: str = "fixed"
    memory_fraction: float | None = None
    #: runtime intra-op threads per worker; 0 = the runtime's default (best on small machines).
    intra_op_threads: int = 0
    max_body_bytes: int = 16 * 1024 * 1024
    #: images (or tensor rows) one request may carry; None = ``max(max_batch_size, 32)``.
    max_images_per_request: int | None = None
    #: decoded pixels one request may carry, summed over its images (read from their headers first).
    max_pixels_per_request: int = 64_000_000
    #: seconds a client has to send a request's head and body, from its first byte; 0 = no limit.
    request_read_timeout: float = 5.0
    #: gunicorn: seconds a silent worker lives, and the grace period on shutdown.
    timeout: int = 120
    graceful_timeout: int = 15
    log_level: str = "info"
    #: images kept in memory per worker for ``GET /gpu``.
    dataset_limit: int = 64

    @property
    def images_per_request(self) -> int:
        """The effective ``--max-images-per-request``: tied to the batch limit unless set."""
        if self.max_images_per_request is not None:
            return self.max_images_per_request
        return max(self.max_batch_size, DEFAULT_MIN_IMAGES_PER_REQUEST)

    def backend_options(self) -> BackendOptions:
        return BackendOptions(
            memory_fraction=self.memory_fraction,
            delay_ms=self.delay_ms,
            delay_distribution=self.delay_distribution,
            intra_op_threads=self.intra_op_threads,
        )


def _check_ranges(cfg: ServerConfig) -> None:
    checks = [
        (cfg.workers >= 1, f"--workers must be >= 1, got {cfg.workers}"),
        (cfg.threads >= 1, f"--threads must be >= 1, got {cfg.threads}"),
        (cfg.max_batch_size >= 1, f"--max-batch-size must be >= 1, got {cfg.max_batch_size}"),
        (cfg.max_delay_ms >= 0, f"--max-delay-ms must be >= 0, got {cfg.max_delay_ms}"),
        (0 <= cfg.port <= 65535, f"--port must be 0..65535, got {cfg.port}"),
        (cfg.delay_ms >= 0, f"--delay-ms must be >= 0, got {cfg.delay_ms}"),
        (cfg.intra_op_threads >= 0, f"--intra-op-threads must be >= 0, got {cfg.intra_op_threads}"),
        (cfg.max_body_bytes >= 1, f"--max-body-bytes must be >= 1, got {cfg.max_body_bytes}"),
        (
            cfg.max_images_per_request is None or cfg.max_images_per_request >= 1,
            f"--max-images-per-request must be >= 1, got {cfg.max_images_per_request}",
        ),
        (cfg.max_pixels_per_request >= 1, f"--max-pixels-per-request must be >= 1, got {cfg.max_pixels_per_request}"),
        (cfg.request_read_timeout >= 0, f"--request-read-timeout must be >= 0, got {cfg.request_read_timeout}"),
        (
            cfg.memory_fraction is None or 0 < cfg.memory_fraction <= 1,
            f"--memory-fraction must be in (0, 1], got {cfg.memory_fraction}",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise InvalidInput(message)
    if cfg.format is not None and cfg.format not in FORMATS:
        raise InvalidInput(f"--format must be one of {', '.join(FORMATS)}, got {cfg.format!r}")
    if cfg.known_model is not None and cfg.known_model not in KNOWN_MODELS:
        raise InvalidInput(f"--known-model must be one of {', '.join(KNOWN_MODELS)}, got {cfg.known_model!r}")
    if cfg.task is not None and cfg.task not in TASKS:
        raise InvalidInput(f"--task must be one of {', '.join(TASKS)}, got {cfg.task!r}")
    if cfg.preprocess is not None and cfg.preprocess not in PREPROCESSORS:
        raise InvalidInput(f"--preprocess must be one of {', '.join(PREPROCESSORS)}, got {cfg.preprocess!r}")
    if cfg.layout is not None:
        parse_layout(cfg.layout, "--layout")


def resolve(cfg: ServerConfig) -> tuple[ModelSpec, Path | None]:
    """The model spec and dataset directory ``cfg`` describes; ``InvalidInput`` names what is wrong."""
    _check_ranges(cfg)
    model_path = Path(cfg.model) if cfg.model else None
    model_dir = read_model_dir(model_path) if model_path is not None and model_path.is_dir() else None
    known_name = cfg.known_model or (model_dir.meta.get("knownModel") if model_dir else None)
    base = KNOWN_MODELS.get(known_name) if known_name else None
    spec = spec_from_json(model_dir.meta, base) if model_dir else base
    if spec is None:
        spec = spec_from_json({}, None)
    fmt = cfg.format or (str(model_dir.meta.get("defaultFormat")) if model_dir else None)
    if fmt is None and model_path is not None:
        fmt = format_of_path(model_path)
    if fmt is None:
        raise InvalidInput("--format is required (tf-graphdef, tf-savedmodel, onnx or null)")
    path: str | None = None
    if fmt != "null":
        if model_path is None:
            raise InvalidInput(f"--model is required for --format {fmt}")
        resolved = model_dir.file_for(fmt) if model_dir else model_path
        if not resolved.exists():
            raise InvalidInput(f"--model {resolved}: no such file or directory")
        path = str(resolved)
    spec = _overlay(spec, cfg, fmt, path, model_path)
    dataset = Path(cfg.dataset) if cfg.dataset else (model_dir.dataset if model_dir else None)
    if dataset is not None and not dataset.is_dir():
        raise InvalidInput(f"--dataset {dataset}: not a directory")
    return spec, dataset


def _overlay(spec: ModelSpec, cfg: ServerConfig, fmt: str, path: str | None, model: Path | None) -> ModelSpec:
    task: Task = spec.task
    for candidate in TASKS:
        if cfg.task == candidate:
            task = candidate
    name = cfg.model_name or (spec.name if spec.known or spec.name != "model" else None)
    if name is None:
        name = model.stem if model is not None else "null"
    spec = replace(
        spec,
        name=name,
        format=fmt,
        path=path,
        task=task,
        inputs=cfg.inputs or spec.inputs,
        outputs=cfg.outputs or spec.outputs,
        input_size=cfg.input_size or spec.input_size,
        layout=parse_layout(cfg.layout, "--layout") if cfg.layout else spec.layout,
        preprocess=cfg.preprocess or spec.preprocess,
    )
    if cfg.outputs or not spec.roles:
        spec = replace(spec, roles=guess_roles(task, spec.outputs))
    if fmt == "null":
        spec = replace(spec, weights="none", note="null backend: no model, synthetic outputs")
    if fmt in ("tf-graphdef",) and not spec.inputs:
        raise InvalidInput("--inputs is required for a tf-graphdef model that is not a known model")
    if fmt == "tf-graphdef" and not spec.outputs:
        raise InvalidInput("--outputs is required for a tf-graphdef model that is not a known model")
    return spec
