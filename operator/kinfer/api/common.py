"""Building blocks shared by both CRD models: camelCase base model, durations, quantities, conditions.

Every field carries a description because the CRD generator copies them into the OpenAPI schema
(``kubectl explain`` shows them).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from kinfer.api.durations import DURATION_PATTERN, parse_duration

GROUP = "kinfer.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "kinfer"


_ACRONYMS = {"Rps": "RPS", "Qps": "QPS", "Url": "URL", "Ip": "IP"}


def wire_name(field: str) -> str:
    """camelCase wire name of a snake_case field, keeping the design's acronyms.

    ``target_rps`` -> ``targetRPS``, ``service_url`` -> ``serviceURL``, ``pod_ip`` -> ``podIP``,
    ``avg99th_ms`` -> ``avg99thMs``.
    """
    parts = field.split("_")
    out = parts[0]
    for part in parts[1:]:
        word = part[:1].upper() + part[1:]
        out += _ACRONYMS.get(word, word)
    return out


class Model(BaseModel):
    """Base of every API object: camelCase on the wire, snake_case in Python, unknown fields refused.

    Refusing unknown fields gives ``kinfer run`` the same strictness as a structural CRD (which would
    silently prune them) plus an error that names the field.
    """

    model_config = ConfigDict(
        alias_generator=wire_name,
        populate_by_name=True,
        extra="forbid",
        validate_default=True,
    )

    def wire(self) -> dict[str, Any]:
        """The object as it appears in a manifest or status patch (camelCase, unset fields left out)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class StatusModel(Model):
    """Status objects tolerate fields written by newer versions of the operator."""

    model_config = ConfigDict(extra="ignore")


#: A Kubernetes duration string; see :func:`kinfer.api.durations.parse_duration`.
Duration = Annotated[str, Field(pattern=DURATION_PATTERN)]

#: A resource quantity ("500m", "2", "4Gi"); YAML may give a bare number.
Quantity = Annotated[
    str | int | float,
    WithJsonSchema({"x-kubernetes-int-or-string": True}),
]


def seconds(duration: str) -> float:
    """Seconds in a validated duration field."""
    return parse_duration(duration)


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(StatusModel):
    """A Kubernetes-style condition (``kubectl wait --for=condition=TYPE`` reads these)."""

    type: str = Field(description="Condition type, e.g. Ready, SLOMet, Progressing.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(default="", description="One CamelCase word saying why.")
    message: str = Field(default="", description="Human-readable detail.")
    last_transition_time: str | None = Field(
        default=None, description="RFC 3339 time the status last changed."
    )


class ResourceList(Model):
    """CPU and memory amounts, as in a container's resources."""

    cpu: Quantity | None = Field(default=None, description='CPU cores, e.g. "2" or "500m".')
    memory: Quantity | None = Field(default=None, description='Memory, e.g. "4Gi".')


class Resources(Model):
    """Container resource requests and limits, passed through to the pod."""

    requests: ResourceList | None = Field(default=None, description="Guaranteed resources.")
    limits: ResourceList | None = Field(default=None, description="Upper bounds.")


class Placement(Model):
    """Where a pod may run (the seed pinned its pod with nodeName)."""

    node_name: str | None = Field(default=None, description="Run on exactly this node.")
    node_selector: dict[str, str] | None = Field(
        default=None, description="Run on nodes carrying all these labels."
    )
