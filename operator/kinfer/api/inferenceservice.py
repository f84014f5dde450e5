"""The InferenceService resource: a model served by N pods of gunicorn workers behind a Service."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from kinfer.api.common import Condition, Model, Placement, Resources, StatusModel

ModelFormat = Literal["tf-graphdef", "tf-savedmodel", "onnx", "null"]
Task = Literal["detection", "classification"]
#: Known models carry MLPerf's tensor names, input sizes and pre/post-processing.
KNOWN_MODELS = ("ssd-mobilenet", "ssd-resnet34", "resnet50", "ssdlite-person")
#: MLPerf's dataset.py pre-processing functions, by the names ``kinfer serve --preprocess`` takes.
Preprocess = Literal[
    "coco-mobilenet", "coco-resnet34", "coco-resnet34-tf", "imagenet-vgg", "imagenet-mobilenet", "resize"
]
#: Input tensor layout: NHWC (TensorFlow's) or NCHW (MLPerf's SSD-ResNet34 file).
Layout = Literal["NHWC", "NCHW"]
DelayDistribution = Literal["fixed", "exponential", "uniform"]

DEFAULT_SERVER_IMAGE = "kinfer/model-server:0.1.0"


class ModelSpec(Model):
    """Which model to serve and how to feed it."""

    name: str = Field(
        min_length=1,
        max_length=63,
        description="Model name in the v2 API and metrics; a known name (ssd-mobilenet, ssd-resnet34, "
        "resnet50, ssdlite-person) also supplies tensor names, input size and pre-processing.",
    )
    format: ModelFormat = Field(description="Backend: tf-graphdef, tf-savedmodel, onnx or null.")
    path: str | None = Field(
        default=None, description="Model file or directory inside the container (not needed for null)."
    )
    inputs: list[str] | None = Field(default=None, description="Input tensor names (default per model).")
    outputs: list[str] | None = Field(default=None, description="Output tensor names (default per model).")
    task: Task | None = Field(default=None, description="detection or classification (default per model).")
    input_size: list[int] | None = Field(
        default=None, min_length=2, max_length=2, description="[height, width] the image is resized to."
    )
    preprocess: Preprocess | None = Field(
        default=None, description="Pre-processing as MLPerf's dataset.py (default per known model)."
    )
    layout: Layout | None = Field(
        default=None, description="Input tensor layout, NHWC or NCHW (default per known model, else NHWC)."
    )
    delay_ms: float | None = Field(
        default=None, ge=0, description="null backend only: mean simulated inference time in ms."
    )
    delay_distribution: DelayDistribution | None = Field(
        default=None, description="null backend only: fixed, exponential or uniform delay."
    )

    @model_validator(mode="after")
    def _path_unless_null(self) -> Self:
        if self.format != "null" and not self.path:
            raise ValueError(f"model.path is required for format {self.format!r}")
        if self.input_size is not None and any(v < 1 for v in self.input_size):
            raise ValueError("model.inputSize values must be >= 1")
        return self


class Batching(Model):
    """Dynamic batching inside a worker: concurrent requests are stacked into one model call."""

    max_batch_size: int = Field(default=1, ge=1, le=1024, description="Largest batch; 1 = batching off.")
    max_delay_ms: float = Field(
        default=0.0, ge=0, le=10_000, description="Longest wait for a batch to fill, in ms."
    )


class GPU(Model):
    """GPU placement: pin devices (several pods may share a card) or request whole GPUs."""

    devices: str | None = Field(
        default=None,
        pattern=r"^[0-9]+(,[0-9]+)*$",
        description='Devices exposed through CUDA_VISIBLE_DEVICES, e.g. "0" or "0,1".',
    )
    count: int | None = Field(
        default=None, ge=1, le=64, description="Request this many nvidia.com/gpu instead of pinning."
    )
    memory_fraction: float | None = Field(
        default=None, gt=0, le=1, description="Per-process cap on GPU memory (the seed used 0.01)."
    )

    @model_validator(mode="after")
    def _devices_or_count(self) -> Self:
        if self.devices is not None and self.count is not None:
            raise ValueError("gpu.devices and gpu.count are exclusive: pin devices or request a count")
        return self


class ServiceSpec(Model):
    """How the pods are exposed."""

    type: Literal["NodePort", "ClusterIP"] = Field(default="NodePort", description="Service type.")
    node_port: int | None = Field(
        default=None, ge=30000, le=32767, description="Fixed node port (NodePort only; else allocated)."
    )

    @model_validator(mode="after")
    def _node_port_only_for_nodeport(self) -> Self:
        if self.node_port is not None and self.type != "NodePort":
            raise ValueError("service.nodePort needs service.type NodePort")
        return self


class Volume(Model):
    """A host directory mounted into the server container (model, data, code, scripts)."""

    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63, description="Volume name.")
    host_path: str = Field(pattern=r"^/", description="Absolute path on the node.")
    mount_path: str = Field(pattern=r"^/", description="Absolute path in the container.")
    read_only: bool | None = Field(
        default=None,
        description="Mount read-only. Unset: read-only unless the operator's allow-list entry for the path "
        "ends in :rw; false under a read-only entry is refused.",
    )


class InferenceServiceSpec(Placement):
    """Desired state of an InferenceService."""

    model: ModelSpec = Field(description="The model and its input/output conventions.")
    workers: int = Field(default=1, ge=1, le=256, description="gunicorn worker processes per pod.")
    threads: int = Field(default=1, ge=1, le=256, description="Threads per worker.")
    batching: Batching | None = Field(default=None, description="Dynamic batching inside each worker.")
    replicas: int = Field(default=1, ge=0, le=1000, description="Pods <name>-pod0..N-1.")
    gpu: GPU | None = Field(default=None, description="GPU pinning or GPU requests.")
    resources: Resources | None = Field(default=None, description="CPU/memory requests and limits.")
    image: str = Field(default=DEFAULT_SERVER_IMAGE, min_length=1, description="Model-server image.")
    port: int = Field(default=5000, ge=1, le=65535, description="Container port the server listens on.")
    service: ServiceSpec | None = Field(default=None, description="Service exposing the pods.")
    volumes: list[Volume] | None = Field(default=None, description="hostPath volumes (allow-listed).")
    dataset: str | None = Field(
        default=None, description="Directory (in the container) whose images GET /gpu draws from."
    )

    @model_validator(mode="after")
    def _unique_volumes(self) -> Self:
        names = [v.name for v in self.volumes or []]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"volumes: duplicate name(s) {', '.join(dupes)}")
        return self

    @property
    def service_or_default(self) -> ServiceSpec:
        """The service spec with defaults filled in."""
        return self.service or ServiceSpec()

    @property
    def batching_or_default(self) -> Batching:
        """The batching spec with defaults filled in (batching off)."""
        return self.batching or Batching()


ServicePhase = Literal["Pending", "Ready", "Degraded", "Failed"]


class PodStatus(StatusModel):
    """One server pod as the operator last saw it."""

    name: str = Field(description="Pod name.")
    phase: str = Field(default="Pending", description="Pod phase.")
    ready: bool = Field(default=False, description="Readiness probe passes.")
    node: str | None = Field(default=None, description="Node the pod runs on.")
    pod_ip: str | None = Field(default=None, description="Pod IP.")


class InferenceServiceStatus(StatusModel):
    """Observed state of an InferenceService."""

    phase: ServicePhase | None = Field(default=None, description="Pending, Ready, Degraded or Failed.")
    replicas: int | None = Field(default=None, description="Pods that exist.")
    ready_replicas: int | None = Field(default=None, description="Pods that are ready.")
    workers: int | None = Field(default=None, description="Workers per pod (for the printer column).")
    endpoint: str | None = Field(default=None, description="http://<nodeIP>:<nodePort> (NodePort).")
    service_url: str | None = Field(default=None, description="In-cluster URL of the Service.")
    pods: list[PodStatus] | None = Field(default=None, description="The server pods.")
    conditions: list[Condition] | None = Field(default=None, description="Ready and failure reasons.")
    observed_generation: int | None = Field(default=None, description="Generation last acted on.")
