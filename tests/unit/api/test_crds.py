"""The CRDs are generated from kinfer.api, structural, and in sync with the files in the repository."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from kinfer.api import crdgen
from kinfer.api.resources import RESOURCES

ROOT = Path(__file__).resolve().parents[3]


def _nodes(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(path, schema)]
    for name, sub in schema.get("properties", {}).items():
        found += _nodes(sub, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            found += _nodes(schema[key], f"{path}[{key}]")
    return found


@pytest.mark.parametrize("kind", list(RESOURCES))
def test_every_schema_node_is_typed_and_has_no_refs(kind: str) -> None:
    schema = crdgen.crd(RESOURCES[kind])["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert "$ref" not in yaml.safe_dump(schema)
    for path, node in _nodes(schema):
        # Untyped only where Kubernetes allows it: int-or-string, or any JSON value (a sweep's matrix values).
        untyped_ok = node.get("x-kubernetes-int-or-string") or node.get("x-kubernetes-preserve-unknown-fields")
        assert "type" in node or untyped_ok, f"{kind}{path} is untyped"
        assert "anyOf" not in node, f"{kind}{path} has a type union"
        if "exclusiveMinimum" in node:
            assert node["exclusiveMinimum"] is True and "minimum" in node


@pytest.mark.parametrize("kind", list(RESOURCES))
def test_every_spec_and_status_field_has_a_description(kind: str) -> None:
    schema = crdgen.crd(RESOURCES[kind])["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for part in ("spec", "status"):
        for path, node in _nodes(schema["properties"][part], part):
            if path.endswith("]") or path == part:
                continue
            assert node.get("description"), f"{kind} {path} has no description"


def test_crd_names_columns_and_subresources_match_the_design() -> None:
    crds = {c["spec"]["names"]["kind"]: c for c in crdgen.all_crds()}
    kisvc, lexp = crds["InferenceService"], crds["LoadExperiment"]
    assert kisvc["spec"]["names"]["shortNames"] == ["kisvc"] and lexp["spec"]["names"]["shortNames"] == [
        "lexp"
    ]
    for c in crds.values():
        version = c["spec"]["versions"][0]
        assert c["spec"]["group"] == "kinfer.dev" and version["name"] == "v1alpha1"
        assert c["spec"]["names"]["categories"] == ["kinfer"]
        assert version["subresources"] == {"status": {}}
    columns = {
        k: [col["name"] for col in c["spec"]["versions"][0]["additionalPrinterColumns"]]
        for k, c in crds.items()
    }
    assert columns["InferenceService"] == ["Ready", "Replicas", "Workers", "Endpoint", "Phase", "Age"]
    assert columns["LoadExperiment"] == [
        "Phase",
        "Target",
        "RPS",
        "QPS",
        "P99(ms)",
        "Avg99th(ms)",
        "SR(%)",
        "CPU",
        "GPU(%)",
        "Age",
    ]
    # the target's resources only with `kubectl get lexp -o wide` (priority 1), from the live record
    wide = {
        col["name"]: (col["jsonPath"], col["type"])
        for col in crds["LoadExperiment"]["spec"]["versions"][0]["additionalPrinterColumns"]
        if col.get("priority") == 1
    }
    assert wide == {"CPU": (".status.live.serverCPU", "number"), "GPU(%)": (".status.live.serverGPUUtil", "number")}


@pytest.mark.parametrize("kind", list(RESOURCES))
def test_printer_columns_point_only_at_declared_fields(kind: str) -> None:
    crd = crdgen.crd(RESOURCES[kind])
    version = crd["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    for column in version["additionalPrinterColumns"]:
        path = column["jsonPath"].lstrip(".").split(".")
        if path[0] == "metadata":
            continue
        node = schema
        for part in path:
            assert part in node.get("properties", {}), (
                f"{column['name']}: {column['jsonPath']} is not declared"
            )
            node = node["properties"][part]


def test_generated_files_in_the_repository_match_the_models() -> None:
    assert crdgen.drift(ROOT) == [], "run `kinfer crds --write`"


def test_generated_files_say_so_in_their_first_line() -> None:
    for rel in crdgen.generated_files():
        first = (ROOT / rel).read_text().splitlines()[0]
        assert first.startswith("# GENERATED") and "kinfer.api" in first


def test_chart_crds_are_gated_by_install_crds() -> None:
    for rel, content in crdgen.generated_files().items():
        if rel.is_relative_to(crdgen.CHART_CRD_DIR):
            lines = content.splitlines()
            assert lines[1] == "{{- if .Values.installCRDs }}" and lines[-1] == "{{- end }}"


def test_check_reports_drift_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert crdgen.main(["--write", "--root", str(tmp_path)]) == 0
    assert crdgen.main(["--check", "--root", str(tmp_path)]) == 0
    target = tmp_path / "crds" / "loadexperiments.kinfer.dev.yaml"
    target.write_text(target.read_text().replace("lexp", "lx"))
    capsys.readouterr()
    assert crdgen.main(["--check", "--root", str(tmp_path)]) == 1
    assert "loadexperiments.kinfer.dev.yaml: differs" in capsys.readouterr().err
