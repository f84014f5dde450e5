"""Whole resources (apiVersion, kind, metadata, spec, status) and their CRD-level facts.

:data:`RESOURCES` is what the CRD generator, the operator and local mode all read: kind, plural,
short names and printer columns are declared once, here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from kinfer.api.common import GROUP, Model
from kinfer.api.inferenceservice import InferenceServiceSpec, InferenceServiceStatus
from kinfer.api.loadexperiment import LoadExperimentSpec, LoadExperimentStatus


class ObjectMeta(BaseModel):
    """The parts of Kubernetes metadata kinfer reads; the rest is kept as given."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    namespace: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    uid: str | None = None
    generation: int | None = None


SpecT = TypeVar("SpecT", bound=Model)
StatusT = TypeVar("StatusT", bound=Model)


class Resource(BaseModel, Generic[SpecT, StatusT]):
    """A custom resource as read from a manifest or the API server."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    api_version: Literal["kinfer.dev/v1alpha1"] = Field(alias="apiVersion")
    kind: str
    metadata: ObjectMeta
    spec: SpecT
    status: StatusT | None = None

    @property
    def name(self) -> str:
        """metadata.name."""
        return self.metadata.name

    @property
    def namespace(self) -> str:
        """metadata.namespace, ``default`` when unset."""
        return self.metadata.namespace or "default"


class InferenceService(Resource[InferenceServiceSpec, InferenceServiceStatus]):
    """kind InferenceService."""

    kind: Literal["InferenceService"] = "InferenceService"


class LoadExperiment(Resource[LoadExperimentSpec, LoadExperimentStatus]):
    """kind LoadExperiment."""

    kind: Literal["LoadExperiment"] = "LoadExperiment"


@dataclass(frozen=True)
class PrinterColumn:
    """One ``kubectl get`` column."""

    name: str
    type: str
    json_path: str
    description: str
    format: str | None = None

    def crd(self) -> dict[str, Any]:
        """The CRD's ``additionalPrinterColumns`` entry."""
        column = {
            "name": self.name,
            "type": self.type,
            "jsonPath": self.json_path,
            "description": self.description,
        }
        if self.format:
            column["format"] = self.format
        return column


AGE = PrinterColumn("Age", "date", ".metadata.creationTimestamp", "Time since creation.")


@dataclass(frozen=True)
class ResourceDef:
    """What the API server needs to know about one kind."""

    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    model: type[Resource[Any, Any]]
    spec_model: type[Model]
    status_model: type[Model]
    columns: tuple[PrinterColumn, ...]
    description: str

    @property
    def crd_name(self) -> str:
        """``<plural>.<group>``."""
        return f"{self.plural}.{GROUP}"


INFERENCE_SERVICE = ResourceDef(
    kind="InferenceService",
    plural="inferenceservices",
    singular="inferenceservice",
    short_names=("kisvc",),
    model=InferenceService,
    spec_model=InferenceServiceSpec,
    status_model=InferenceServiceStatus,
    columns=(
        PrinterColumn("Ready", "integer", ".status.readyReplicas", "Pods ready."),
        PrinterColumn("Replicas", "integer", ".spec.replicas", "Pods wanted."),
        PrinterColumn("Workers", "integer", ".spec.workers", "gunicorn workers per pod."),
        PrinterColumn("Endpoint", "string", ".status.endpoint", "http://<nodeIP>:<nodePort>."),
        PrinterColumn("Phase", "string", ".status.phase", "Pending, Ready, Degraded or Failed."),
        AGE,
    ),
    description="A model served by gunicorn workers in N pods behind a Service.",
)

LOAD_EXPERIMENT = ResourceDef(
    kind="LoadExperiment",
    plural="loadexperiments",
    singular="loadexperiment",
    short_names=("lexp",),
    model=LoadExperiment,
    spec_model=LoadExperimentSpec,
    status_model=LoadExperimentStatus,
    columns=(
        PrinterColumn("Phase", "string", ".status.phase", "Where the experiment is."),
        PrinterColumn("Target", "number", ".status.targetRPS", "Offered rate now, requests/s."),
        PrinterColumn("RPS", "number", ".status.live.realRPS", "Requests sent in the last interval."),
        PrinterColumn("QPS", "number", ".status.live.realQPS", "Responses in the last interval."),
        PrinterColumn("P99(ms)", "number", ".status.live.p99Ms", "p99 latency of the last interval."),
        PrinterColumn("Avg99th(ms)", "number", ".status.avg99thMs", "Mean p99 over the window."),
        PrinterColumn("SR(%)", "number", ".status.serviceRatePercent", "Service rate over the window."),
        AGE,
    ),
    description="An open-loop load schedule against a target, with live tail latency in its status.",
)

RESOURCES: dict[str, ResourceDef] = {d.kind: d for d in (INFERENCE_SERVICE, LOAD_EXPERIMENT)}
