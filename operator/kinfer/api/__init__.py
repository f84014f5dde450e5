"""The kinfer API: pydantic models of the CRDs — the single source of truth.

The CRD YAML, the chart's CRD templates and the printer columns are generated from these models
(:mod:`kinfer.api.crdgen`); the operator, local mode and the plugin read specs through them.
"""

from kinfer.api.common import API_VERSION, CATEGORY, GROUP, VERSION, Condition
from kinfer.api.inferenceservice import InferenceServiceSpec, InferenceServiceStatus
from kinfer.api.loadexperiment import LoadExperimentSpec, LoadExperimentStatus
from kinfer.api.manifests import KinferResource, ManifestError, load_resources, parse_resource
from kinfer.api.resources import RESOURCES, InferenceService, LoadExperiment, ResourceDef, Sweep
from kinfer.api.sweep import SweepSpec, SweepStatus

__all__ = [
    "API_VERSION",
    "CATEGORY",
    "GROUP",
    "RESOURCES",
    "VERSION",
    "Condition",
    "InferenceService",
    "InferenceServiceSpec",
    "InferenceServiceStatus",
    "KinferResource",
    "LoadExperiment",
    "LoadExperimentSpec",
    "LoadExperimentStatus",
    "ManifestError",
    "ResourceDef",
    "Sweep",
    "SweepSpec",
    "SweepStatus",
    "load_resources",
    "parse_resource",
]
