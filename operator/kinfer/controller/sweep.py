"""Sweep handlers: a daemon per Sweep runs its points one at a time.

For each point (in :func:`kinfer.api.sweep.points` order) the daemon creates the InferenceService and
the LoadExperiment ``<sweep>-p<index>`` (controlled by the Sweep), waits for the experiment to end,
records the point's row in the status, deletes the point's InferenceService and waits until its pods
are gone (points never share a GPU or a core), then honours ``cooldown``. A point that fails (its
experiment Failed, its InferenceService never Ready within ``KINFER_OPERATOR_SWEEP_READY_TIMEOUT_S``,
its objects refused by the API) is recorded as Failed and the sweep goes on.

Restarts resume from the status: the next point is ``len(status.points)``, and a point whose objects
already exist is adopted only if this Sweep controls them (never duplicated, never someone else's).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import Mapping
from typing import Any

import kopf
from pydantic import ValidationError

from kinfer.api import GROUP, VERSION
from kinfer.api.manifests import describe_validation_error
from kinfer.api.resources import Sweep
from kinfer.api.sweep import Point, SweepError, SweepStatus, failed_row, point_row, points
from kinfer.controller import lexp_build
from kinfer.controller import sweep_build as build
from kinfer.controller.conditions import now_rfc3339, set_condition
from kinfer.controller.kube import CONFIGMAP, ISVC, LEXP, POD, Kind, KubeError, NotOwned
from kinfer.controller.meta import SERVICE_LABEL, controlled_by
from kinfer.controller.runtime import REGISTRY, Runtime, event, runtime

log = logging.getLogger("kinfer.operator.sweep")
RESOURCE = (GROUP, VERSION, "sweeps")
SWEEP = Kind(f"/apis/{GROUP}/{VERSION}", "sweeps", "Sweep")
#: How often a running point's experiment (and a point's vanishing pods) are looked at, seconds.
POLL_S = 1.0
#: Annotation on a point's LoadExperiment saying why the sweep gave up on it (kept across restarts).
FAILURE_ANNOTATION = "kinfer.dev/sweep-point-failure"
#: Slack past a point's planned length before it is stopped, and again before it is left behind, seconds.
GIVE_UP_S = 60.0


class SpecInvalid(kopf.PermanentError):
    """The Sweep cannot be run; the message names the field or the matrix path."""


def plain(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A deep plain-dict copy of a kopf body (a live mapping in daemons)."""
    result: dict[str, Any] = json.loads(json.dumps(obj, default=dict))
    return result


def parse(body: Mapping[str, Any]) -> tuple[Sweep, list[Point]]:
    """The typed Sweep and its points; an invalid spec or matrix is a :class:`SpecInvalid`."""
    doc = {k: body[k] for k in ("apiVersion", "kind", "metadata", "spec") if k in body}
    try:
        sweep = Sweep.model_validate(doc)
    except ValidationError as exc:
        raise SpecInvalid(describe_validation_error(exc)) from None
    try:
        return sweep, points(sweep.name, sweep.spec)
    except SweepError as exc:
        raise SpecInvalid(str(exc)) from None


def _age_s(obj: Mapping[str, Any]) -> float:
    created = (obj.get("metadata") or {}).get("creationTimestamp")
    if not isinstance(created, str):
        return 0.0
    when = dt.datetime.fromisoformat(created.replace("Z", "+00:00"))
    return (dt.datetime.now(dt.UTC) - when).total_seconds()


def _annotations(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("annotations") or {})


class SweepRun:
    """One Sweep's run; the status it writes is its memory (a restart resumes from it)."""

    def __init__(self, rt: Runtime, body: Mapping[str, Any], stopped: kopf.DaemonStopped) -> None:
        self.rt = rt
        self.raw = plain(body)
        self.stopped = stopped
        meta = self.raw["metadata"]
        self.ns: str = meta["namespace"]
        self.name: str = meta["name"]
        self.uid: str = meta.get("uid") or ""
        self.status: dict[str, Any] = dict(self.raw.get("status") or {})

    async def patch(self, status: dict[str, Any]) -> None:
        """One status write (``None`` values delete fields); the local copy follows it."""
        status["observedGeneration"] = self.raw["metadata"].get("generation")
        clean = SweepStatus.model_validate(status).wire()
        deleted = {k: None for k, v in status.items() if v is None}
        await self.rt.kube.patch_status(SWEEP, self.ns, self.name, {**clean, **deleted})
        for key, value in status.items():
            if value is None:
                self.status.pop(key, None)
            else:
                self.status[key] = clean.get(key, value)

    def conditions(self, *sets: tuple[str, bool, str, str]) -> list[dict[str, Any]]:
        """The conditions with each ``(type, ok, reason, message)`` set."""
        conditions = self.status.get("conditions")
        for type_, ok, reason, message in sets:
            conditions = set_condition(conditions, type_, ok, reason, message)
        return list(conditions or [])

    async def fail(self, reason: str, message: str) -> None:
        """The Sweep cannot run at all: phase Failed with the reason."""
        if self.status.get("phase") == "Failed":
            return
        await self.patch({
            "phase": "Failed",
            "current": None,
            "conditions": self.conditions(("Failed", True, reason, message), ("Progressing", False, reason, message),
                                          ("Complete", False, reason, message)),
        })  # fmt: skip
        event(self.raw, warning=True, reason=reason, message=message)

    async def run(self) -> None:
        """Run every point not yet recorded, then complete the Sweep."""
        if self.status.get("phase") in ("Succeeded", "Failed"):
            return
        try:
            sweep, plan = parse(self.raw)
        except SpecInvalid as exc:
            await self.fail("InvalidSpec", str(exc))
            return
        objective, total = sweep.spec.objective_or_default, len(plan)
        rows: list[dict[str, Any]] = [dict(r) for r in self.status.get("points") or []]
        if self.status.get("phase") != "Running":
            message = f"{total} point(s), one at a time"
            await self.patch({
                "phase": "Running", "objective": objective, "total": total, "done": len(rows),
                "conditions": self.conditions(("Progressing", True, "Running", message),
                                              ("Complete", False, "Running", message)),
            })  # fmt: skip
            event(self.raw, reason="Running", message=message)
        while len(rows) < total:
            point = plan[len(rows)]
            shown = ", ".join(f"{k}={v}" for k, v in point.parameters.items())
            message = f"point {point.index + 1} of {total}: {shown}"
            if (self.status.get("current") or {}).get("index") != point.index:
                await self.patch({"current": build.point_started(point),
                                  "conditions": self.conditions(("Progressing", True, "RunningPoint", message))})
            row = await self.run_point(point)
            if row is None:  # the daemon is stopping (Sweep deleted, operator exiting): resumed later
                return
            await self.teardown(point)
            rows.append(row)
            await self.patch(build.after_point(rows, objective, total))
            event(self.raw, warning=row["phase"] == "Failed", reason=f"Point{row['phase']}",
                  message=f"point {point.index} ({shown}): {row.get('message') or row['phase'].lower()}")  # fmt: skip
            if len(rows) < total and sweep.spec.cooldown_s > 0:
                await self.stopped.wait(sweep.spec.cooldown_s)
            if self.stopped:
                return
        phase = build.outcome(rows)
        message = build.summary_text(rows, objective, total)
        await self.patch({
            "phase": phase, "current": None,
            "conditions": self.conditions(("Complete", True, phase, message),
                                          ("Progressing", False, "Complete", message)),
        })  # fmt: skip
        event(self.raw, warning=phase == "Failed", reason=f"Sweep{phase}", message=message)

    # --- one point ----------------------------------------------------------------------------------

    async def run_point(self, point: Point) -> dict[str, Any] | None:
        """Run one point to its end and return its row (``None`` when the daemon is stopping)."""
        started = now_rfc3339()
        try:
            lexp = await self.rt.kube.get_owned(LEXP, self.ns, point.name, self.uid)
            if lexp is None:
                await self.rt.kube.ensure(build.build_service(self.name, self.ns, self.uid, point))
                lexp, _ = await self.rt.kube.ensure(build.build_experiment(self.name, self.ns, self.uid, point))
                event(self.raw, reason="PointStarted",
                      message=f"Created InferenceService and LoadExperiment {point.name}")
            elif not self.ended(lexp) and FAILURE_ANNOTATION not in _annotations(lexp):
                # Adopted after a restart: its InferenceService too (recreated if it was missing).
                await self.rt.kube.ensure(build.build_service(self.name, self.ns, self.uid, point))
            lexp = await self.wait_for_end(point, lexp)
        except KubeError as exc:
            if not exc.permanent:
                raise
            reason = "not owned by this Sweep" if isinstance(exc, NotOwned) else f"refused by the API ({exc.status})"
            return {**failed_row(point.index, point.parameters, point.name, f"{reason}: {exc}"), "startedAt": started,
                    "finishedAt": now_rfc3339()}  # fmt: skip
        if lexp is None:
            return None
        annotations = _annotations(lexp)
        status = lexp.get("status") or {}
        summary = await self.summary(point, lexp)
        row = point_row(point.index, point.parameters, point.name, status, summary)
        row.setdefault("startedAt", started)
        row["finishedAt"] = now_rfc3339()
        if FAILURE_ANNOTATION in annotations:
            row["phase"], row["message"] = "Failed", annotations[FAILURE_ANNOTATION]
        return row

    @staticmethod
    def ended(lexp: Mapping[str, Any]) -> bool:
        """Whether the experiment reached a terminal phase."""
        return (lexp.get("status") or {}).get("phase") in build.POINT_ENDED

    async def wait_for_end(self, point: Point, lexp: dict[str, Any]) -> dict[str, Any] | None:
        """Poll the point's experiment until it ends. A target never Ready within the bound, or a run far
        past its planned length, is given up: the experiment is stopped (its results kept) and the reason
        annotated on it; one that does not even stop is left behind after :data:`GIVE_UP_S` more.
        ``None`` when the daemon is stopping."""
        ready_limit = self.rt.settings.sweep_ready_timeout_s
        run_limit = ready_limit + 2 * point.experiment.duration_s + GIVE_UP_S
        while not self.ended(lexp):
            phase = (lexp.get("status") or {}).get("phase")
            annotations = _annotations(lexp)
            age = _age_s(lexp)
            why: str | None = None
            if phase in (None, "Pending", "WaitingForTarget") and age > ready_limit:
                state = await self.not_ready_reason(point)
                why = f"InferenceService {point.name} not Ready within {ready_limit:g}s: {state}"
            elif age > run_limit:
                planned = point.experiment.duration_s
                why = f"LoadExperiment {point.name} still {phase} after {run_limit:g}s (planned {planned:g}s)"
            if FAILURE_ANNOTATION in annotations and age > run_limit + GIVE_UP_S:
                return lexp  # asked to stop long ago and still not ended: record it and move on
            if why is not None and FAILURE_ANNOTATION not in annotations:
                await self.rt.kube.patch(LEXP, self.ns, point.name,
                                         {"metadata": {"annotations": {FAILURE_ANNOTATION: why}},
                                          "spec": {"stop": True}})  # fmt: skip
                event(self.raw, warning=True, reason="PointGivenUp", message=why)
            await self.stopped.wait(POLL_S)
            if self.stopped:
                return None
            found = await self.rt.kube.get_owned(LEXP, self.ns, point.name, self.uid)
            if found is None:
                message = f"LoadExperiment {point.name} was deleted before it ended"
                return {"metadata": {"annotations": {FAILURE_ANNOTATION: message}}, "status": lexp.get("status") or {}}
            lexp = found
        return lexp

    async def not_ready_reason(self, point: Point) -> str:
        """What the point's InferenceService says about itself (its Ready condition), for the row."""
        isvc = await self.rt.kube.get(ISVC, self.ns, point.name)
        if isvc is None:
            return "it does not exist"
        status = isvc.get("status") or {}
        for cond in status.get("conditions") or []:
            if cond.get("type") == "Ready" and cond.get("message"):
                return f"phase {status.get('phase')}: {cond['message']}"
        return f"phase {status.get('phase') or 'unknown'}"

    async def summary(self, point: Point, lexp: Mapping[str, Any]) -> dict[str, Any] | None:
        """The experiment's ``summary.json`` from its results ConfigMap, when it is there and readable."""
        uid = (lexp.get("metadata") or {}).get("uid")
        try:
            cm = await self.rt.kube.get_owned(CONFIGMAP, self.ns, lexp_build.results_name(point.name), uid)
        except KubeError as exc:
            log.info("%s/%s: no summary for %s: %s", self.ns, self.name, point.name, exc)
            return None
        text = ((cm or {}).get("data") or {}).get("summary.json")
        try:
            summary = json.loads(text) if text else None
        except ValueError:
            return None
        return summary if isinstance(summary, dict) else None

    async def teardown(self, point: Point) -> None:
        """Delete the point's InferenceService and wait until its pods are gone (bounded)."""
        if await self.rt.kube.delete(ISVC, self.ns, point.name, self.uid):
            event(self.raw, reason="PointServiceDeleted", message=f"Deleted InferenceService {point.name}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.rt.settings.sweep_teardown_timeout_s
        while True:
            isvc = await self.rt.kube.get(ISVC, self.ns, point.name)
            ours = isvc is not None and controlled_by(isvc, self.uid)
            pods = await self.rt.kube.list(POD, self.ns, {SERVICE_LABEL: point.name})
            if not ours and not pods:
                return
            if loop.time() > deadline:
                limit = self.rt.settings.sweep_teardown_timeout_s
                message = f"{len(pods)} pod(s) of {point.name} still there after {limit:g}s: next point anyway"
                log.warning("%s/%s: %s", self.ns, self.name, message)
                event(self.raw, warning=True, reason="TeardownSlow", message=message)
                return
            await self.stopped.wait(POLL_S)
            if self.stopped:
                return


async def run_sweep(rt: Runtime, body: Mapping[str, Any], stopped: kopf.DaemonStopped) -> None:
    """The daemon's loop: run the Sweep, retrying passing API errors (the status says where it was)."""
    key = (body["metadata"]["namespace"], body["metadata"]["name"])
    run = SweepRun(rt, body, stopped)
    while not stopped:
        try:
            await run.run()
            rt.backoff.reset(key)
            return
        except KubeError as exc:
            if exc.permanent:  # the Sweep's own status refused (403, 422): say so if we can, then stop
                log.warning("%s/%s: %s", *key, exc)
                reason = "NotOwned" if isinstance(exc, NotOwned) else f"APIRefused{exc.status}"
                try:
                    await run.fail(reason, str(exc))
                except KubeError as again:
                    log.warning("%s/%s: cannot record the failure: %s", *key, again)
                return
            delay = rt.backoff.next_delay(key, exc)
            log.warning("%s/%s: API call failed (retry in %.1fs): %s", *key, delay, exc)
            await stopped.wait(delay)


# --- kopf handlers (thin) ----------------------------------------------------------------------------


@kopf.daemon(*RESOURCE, registry=REGISTRY, cancellation_timeout=5.0)
async def sweep_daemon(body: kopf.Body, memo: kopf.Memo, stopped: kopf.DaemonStopped, **_: Any) -> None:
    """One per Sweep, from creation (or operator start) until its last point is recorded."""
    await run_sweep(runtime(memo), body, stopped)


@kopf.on.delete(*RESOURCE, registry=REGISTRY, optional=True)
async def on_delete(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Forget the Sweep's backoff. Its points' objects carry its owner reference: the garbage collector
    deletes them."""
    runtime(memo).backoff.reset((body["metadata"]["namespace"], body["metadata"]["name"]))
