"""Pure builders of a Sweep: each point's InferenceService and LoadExperiment, and the Sweep's status.

A point's objects are named ``<sweep>-p<index>`` (deterministic: a restarted operator finds them again
instead of creating them twice) and carry the Sweep's controller reference (deleting the Sweep deletes
them; the operator touches only what this Sweep controls).

The status is the sweep's memory: ``points`` holds one row per finished point, in order, so the next
point to run is ``len(points)``; a restarted operator resumes there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kinfer.api import API_VERSION
from kinfer.api.sweep import Objective, Point, best
from kinfer.controller.meta import owner_reference, standard_labels

#: Label naming the Sweep a point's InferenceService and LoadExperiment belong to.
SWEEP_LABEL = "kinfer.dev/sweep"
#: Label with the point's index.
POINT_LABEL = "kinfer.dev/point"
#: Point phases that end a point.
POINT_ENDED = ("Succeeded", "Failed", "Stopped")


def _metadata(sweep: str, namespace: str, uid: str, point: Point, component: str) -> dict[str, Any]:
    labels = {**standard_labels("kinfer", point.name, component), SWEEP_LABEL: sweep, POINT_LABEL: str(point.index)}
    return {
        "name": point.name,
        "namespace": namespace,
        "labels": labels,
        "ownerReferences": [owner_reference("Sweep", sweep, uid)],
    }


def build_service(sweep: str, namespace: str, uid: str, point: Point) -> dict[str, Any]:
    """The point's InferenceService ``<sweep>-p<index>``, controlled by the Sweep."""
    return {
        "apiVersion": API_VERSION,
        "kind": "InferenceService",
        "metadata": _metadata(sweep, namespace, uid, point, "sweep-service"),
        "spec": point.service.wire(),
    }


def build_experiment(sweep: str, namespace: str, uid: str, point: Point) -> dict[str, Any]:
    """The point's LoadExperiment ``<sweep>-p<index>`` (its target is the point's InferenceService unless
    the template names a url), controlled by the Sweep."""
    return {
        "apiVersion": API_VERSION,
        "kind": "LoadExperiment",
        "metadata": _metadata(sweep, namespace, uid, point, "sweep-experiment"),
        "spec": point.experiment.wire(),
    }


def next_index(status: Mapping[str, Any] | None) -> int:
    """The index of the next point to run: the number of rows recorded."""
    return len((status or {}).get("points") or [])


def outcome(rows: Sequence[Mapping[str, Any]]) -> str:
    """The Sweep's final phase: Failed when every point failed, else Succeeded."""
    if rows and all(row.get("phase") == "Failed" for row in rows):
        return "Failed"
    return "Succeeded"


def after_point(rows: Sequence[Mapping[str, Any]], objective: Objective, total: int) -> dict[str, Any]:
    """The status fields written once a point's row is recorded."""
    return {
        "points": [dict(r) for r in rows],
        "done": len(rows),
        "total": total,
        "current": None,
        "best": best(rows, objective),
    }


def point_started(point: Point) -> dict[str, Any]:
    """``status.current`` while a point runs."""
    return {"index": point.index, "parameters": dict(point.parameters)}


def summary_text(rows: Sequence[Mapping[str, Any]], objective: Objective, total: int) -> str:
    """One line for the Complete condition: points run, failed, and the best one."""
    failed = sum(1 for r in rows if r.get("phase") == "Failed")
    top = best(rows, objective)
    where = "no point qualified" if top is None else (
        f"best {objective} {top['value']:g} at point {top['index']} {top['parameters']}"
    )
    return f"{len(rows)} of {total} point(s) run, {failed} failed; {where}"
