"""Every example validates against the generated CRD schemas and the pydantic models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from kinfer.api import InferenceService, LoadExperiment, load_resources
from kinfer.api.crdgen import all_crds

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def _strip_k8s_extensions(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: _strip_k8s_extensions(v) for k, v in schema.items() if not k.startswith("x-kubernetes")}
    if isinstance(schema, list):
        return [_strip_k8s_extensions(v) for v in schema]
    return schema


SCHEMAS = {
    c["spec"]["names"]["kind"]: _strip_k8s_extensions(c["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    for c in all_crds()
}


def test_there_are_examples() -> None:
    assert {p.name for p in EXAMPLES} >= {"mobilenet.yaml", "local-demo.yaml"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_validates_against_the_generated_schema(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs
    for doc in docs:
        jsonschema.Draft4Validator(SCHEMAS[doc["kind"]]).validate(doc)
    assert len(load_resources([path])) == len(docs)


def test_the_schema_validator_would_catch_a_bad_example() -> None:
    doc = yaml.safe_load_all((ROOT / "examples/mobilenet.yaml").read_text()).__next__()
    doc["spec"]["workers"] = "eight"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft4Validator(SCHEMAS["InferenceService"]).validate(doc)


def test_mobilenet_example_has_seed_parity() -> None:
    kisvc, lexp = load_resources([ROOT / "examples/mobilenet.yaml"])
    assert isinstance(kisvc, InferenceService) and isinstance(lexp, LoadExperiment)
    spec = kisvc.spec
    assert spec.workers == 8 and spec.gpu is not None
    assert (spec.gpu.devices, spec.gpu.memory_fraction) == ("0", 0.01)
    assert spec.node_name and spec.service_or_default.node_port == 31500
    assert [v.mount_path for v in spec.volumes or []] == [
        "/model",
        "/data",
        "/home/inference",
        "/home/script",
    ]
    rates = [s.rps for s in lexp.spec.schedule]
    assert rates[0] == 1 and rates[-1] == 50 and rates == sorted(rates)
    assert lexp.spec.window_size == 60 and lexp.spec.target.service == "mobilenet"


def test_local_demo_uses_the_real_person_detector_on_cpu() -> None:
    kisvc, lexp = load_resources([ROOT / "examples/local-demo.yaml"])
    assert isinstance(kisvc, InferenceService) and isinstance(lexp, LoadExperiment)
    assert kisvc.spec.model.name == "ssdlite-person" and kisvc.spec.gpu is None
    assert lexp.spec.duration_s <= 60
