"""Read YAML manifests into typed resources, with errors that name the file, resource and field."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from kinfer.api.common import API_VERSION
from kinfer.api.resources import RESOURCES, InferenceService, LoadExperiment, Sweep

KinferResource = InferenceService | LoadExperiment | Sweep


class ManifestError(ValueError):
    """A manifest that cannot be used; the message names where and what."""


def _field_path(loc: Iterable[int | str]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def describe_validation_error(exc: ValidationError) -> str:
    """``field.path: message`` for each error, joined by ``; ``."""
    parts = []
    for err in exc.errors():
        where = _field_path(err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {msg}" if where else msg)
    return "; ".join(parts)


def parse_resource(doc: dict[str, Any], source: str = "<input>") -> KinferResource:
    """Validate one manifest document as an InferenceService, a LoadExperiment or a Sweep."""
    kind = doc.get("kind")
    name = (doc.get("metadata") or {}).get("name", "<unnamed>")
    if kind not in RESOURCES:
        known = ", ".join(RESOURCES)
        raise ManifestError(f"{source}: unsupported kind {kind!r} (expected one of {known})")
    if doc.get("apiVersion") != API_VERSION:
        raise ManifestError(
            f"{source}: {kind} {name}: apiVersion must be {API_VERSION!r}, got {doc.get('apiVersion')!r}"
        )
    model = RESOURCES[kind].model
    try:
        resource = model.model_validate(doc)
    except ValidationError as exc:
        raise ManifestError(f"{source}: {kind} {name}: {describe_validation_error(exc)}") from None
    assert isinstance(resource, InferenceService | LoadExperiment | Sweep)
    return resource


def load_documents(path: Path) -> list[dict[str, Any]]:
    """All non-empty YAML documents of a file; errors name the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise ManifestError(f"{path}: invalid YAML: {exc}") from None
    for index, doc in enumerate(docs):
        if not isinstance(doc, dict):
            raise ManifestError(f"{path}: document {index + 1} is not a mapping")
    return docs


def load_resources(paths: Iterable[Path]) -> list[KinferResource]:
    """Every kinfer resource in the files, in order; other kinds are an error."""
    resources: list[KinferResource] = []
    for path in paths:
        for doc in load_documents(path):
            resources.append(parse_resource(doc, str(path)))
    return resources
