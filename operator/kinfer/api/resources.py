"""Whole resources (apiVersion, kind, metadata, spec, status) and their CRD-level facts.

:data:`RESOURCES` is what the CRD generator, the operator and local mode all read: kind, plural,
short names and printer columns are declared once, here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from kinfer.api.common import GROUP, Model
from kinfer.api.inferenceservice import InferenceServiceSpec, InferenceServiceStatus
from kinfer.api.loadexperiment import LoadExperimentSpec, LoadExperimentStatus
from kinfer.api.sweep import INDEX_DIGITS, POINT_SUFFIX, SweepSpec, SweepStatus


@dataclass(frozen=True)
class NameRule:
    """What ``metadata.name`` must be so that every object the operator derives from it is valid.

    A name the custom resource accepts can still be refused for what is built from it (a Service name
    must start with a letter; a Job name goes into a 63-character label). The rule is checked by the API
    server at admission (a CEL rule in the generated CRD) and by the typed model (local mode, the
    operator), with the same message.
    """

    pattern: str
    max_length: int
    why: str

    def problem(self, name: str) -> str | None:
        """Why ``name`` cannot work, or ``None``."""
        if len(name) > self.max_length or not re.fullmatch(self.pattern, name):
            return self.message
        return None

    @property
    def message(self) -> str:
        """The admission message: the rule and the reason for it."""
        return (
            f"metadata.name must match {self.pattern} and be at most {self.max_length} characters: {self.why}"
        )

    def cel(self) -> dict[str, str]:
        """The CRD's root ``x-kubernetes-validations`` entry."""
        rule = f"size(self.metadata.name) <= {self.max_length} && self.metadata.name.matches('{self.pattern}')"
        return {"rule": rule, "message": self.message}


#: An InferenceService names its Service (an RFC 1035 label) and labels its pods with its name.
SERVICE_NAME = NameRule(
    r"^[a-z]([-a-z0-9]*[a-z0-9])?$", 63, "it names the Service (a DNS label starting with a letter)"
)
#: A LoadExperiment names its Job ``<name>-loadgen`` (an indexed Job's name is a DNS label, at most 63).
EXPERIMENT_NAME = NameRule(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", 55, "its generator Job is named <name>-loadgen (a DNS label of 63 at most)"
)
#: A Sweep names each point's InferenceService and LoadExperiment ``<name>-p<index>``: both rules above
#: must hold for the longest index.
SWEEP_NAME = NameRule(
    SERVICE_NAME.pattern,
    EXPERIMENT_NAME.max_length - len(POINT_SUFFIX) - INDEX_DIGITS,
    "each point's InferenceService and LoadExperiment are named <name>-p<index> (a DNS label starting "
    f"with a letter, and room for the LoadExperiment's -loadgen Job and a {INDEX_DIGITS}-digit index)",
)


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


    NAME_RULE: ClassVar[NameRule | None] = None

    @model_validator(mode="after")
    def _name_fits(self) -> Resource[SpecT, StatusT]:
        problem = self.NAME_RULE.problem(self.metadata.name) if self.NAME_RULE else None
        if problem:
            raise ValueError(problem)
        return self


class InferenceService(Resource[InferenceServiceSpec, InferenceServiceStatus]):
    """kind InferenceService."""

    NAME_RULE = SERVICE_NAME
    kind: Literal["InferenceService"] = "InferenceService"


class LoadExperiment(Resource[LoadExperimentSpec, LoadExperimentStatus]):
    """kind LoadExperiment."""

    NAME_RULE = EXPERIMENT_NAME
    kind: Literal["LoadExperiment"] = "LoadExperiment"


class Sweep(Resource[SweepSpec, SweepStatus]):
    """kind Sweep."""

    NAME_RULE = SWEEP_NAME
    kind: Literal["Sweep"] = "Sweep"


@dataclass(frozen=True)
class PrinterColumn:
    """One ``kubectl get`` column."""

    name: str
    type: str
    json_path: str
    description: str
    format: str | None = None
    priority: int = 0
    """0: always shown; 1: shown by ``kubectl get -o wide`` only."""

    def crd(self) -> dict[str, Any]:
        """The CRD's ``additionalPrinterColumns`` entry."""
        column: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "jsonPath": self.json_path,
            "description": self.description,
        }
        if self.format:
            column["format"] = self.format
        if self.priority:
            column["priority"] = self.priority
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
    name_rule: NameRule
    live_fields: tuple[str, ...] | None = None
    """Spec fields that may change after creation; ``None``: all of them (the spec is reconciled); ``()``:
    none."""

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
    name_rule=SERVICE_NAME,
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
        PrinterColumn("CPU", "number", ".status.live.serverCPU", "The target's CPU use, cores.", priority=1),
        PrinterColumn("GPU(%)", "number", ".status.live.serverGPUUtil", "The target's GPU utilization.", priority=1),
        AGE,
    ),
    description="An open-loop load schedule against a target, with live tail latency in its status.",
    name_rule=EXPERIMENT_NAME,
    # The run is planned from the rest of the spec (Job, schedule file, parallelism, target): only the
    # live controls change it while it exists.
    live_fields=("intensity", "stop"),
)

SWEEP = ResourceDef(
    kind="Sweep",
    plural="sweeps",
    singular="sweep",
    short_names=("sweep",),
    model=Sweep,
    spec_model=SweepSpec,
    status_model=SweepStatus,
    columns=(
        PrinterColumn("Phase", "string", ".status.phase", "Pending, Running, Succeeded or Failed."),
        PrinterColumn("Done", "integer", ".status.done", "Points finished."),
        PrinterColumn("Total", "integer", ".status.total", "Points in the matrix."),
        PrinterColumn("Best", "number", ".status.best.value", "The best point's objective value."),
        AGE,
        PrinterColumn("Objective", "string", ".status.objective", "What best means.", priority=1),
        PrinterColumn("Point", "integer", ".status.current.index", "The point running now.", priority=1),
    ),
    description="A design-space study: an InferenceService and a LoadExperiment run once per point of a "
    "parameter matrix, one point at a time.",
    name_rule=SWEEP_NAME,
    # Its points are expanded from the whole spec and their rows recorded in order: nothing may change.
    live_fields=(),
)

RESOURCES: dict[str, ResourceDef] = {d.kind: d for d in (INFERENCE_SERVICE, LOAD_EXPERIMENT, SWEEP)}
