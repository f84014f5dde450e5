"""InferenceService handlers: pods ``<name>-pod0..N-1`` + a Service, kept converged and reported.

One :func:`reconcile` does everything and is idempotent (deterministic names, create-if-absent), so it
is safe to call from any trigger: the resource's create/update/resume, any event of one of its pods
(a pod deleted → recreated; a pod ready → status), and a slow safety-net timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

import kopf
from pydantic import ValidationError

from kinfer.api import GROUP, VERSION, InferenceService, InferenceServiceStatus
from kinfer.api.manifests import describe_validation_error
from kinfer.controller import isvc_build as build
from kinfer.controller.conditions import differs, set_condition
from kinfer.controller.kube import ISVC, POD, SERVICE, KubeError, NotOwned
from kinfer.controller.meta import SERVICE_LABEL
from kinfer.controller.runtime import REGISTRY, Runtime, event, runtime

log = logging.getLogger("kinfer.operator.inferenceservice")
RESOURCE = (GROUP, VERSION, "inferenceservices")


class SpecInvalid(kopf.PermanentError):
    """The spec cannot be run; the message names the field."""


def parse(body: Mapping[str, Any]) -> InferenceService:
    """The typed resource; an invalid spec is a :class:`SpecInvalid` naming the field."""
    doc = {k: body[k] for k in ("apiVersion", "kind", "metadata", "spec") if k in body}
    try:
        return InferenceService.model_validate(doc)
    except ValidationError as exc:
        raise SpecInvalid(describe_validation_error(exc)) from None


async def _fail(rt: Runtime, body: Mapping[str, Any], reason: str, message: str) -> None:
    meta = body["metadata"]
    current = body.get("status") or {}
    status = {
        "phase": "Failed",
        "conditions": set_condition(current.get("conditions"), "Ready", False, reason, message),
        "observedGeneration": meta.get("generation"),
    }
    if differs(current, {k: v for k, v in status.items() if k != "conditions"}) or differs(
        {"r": current.get("conditions")}, {"r": status["conditions"]}
    ):
        await rt.kube.patch_status(ISVC, meta["namespace"], meta["name"], status)
        event(body, warning=True, reason=reason, message=message)


async def reconcile(rt: Runtime, body: Mapping[str, Any]) -> str:
    """Converge pods and Service to the spec and write the status; returns the phase."""
    meta = body["metadata"]
    key = (meta["namespace"], meta["name"])
    async with rt.locks[key]:
        try:
            isvc = parse(body)
            build.check_host_paths(isvc, rt.settings)
        except SpecInvalid as exc:
            await _fail(rt, body, "InvalidSpec", str(exc))
            rt.metrics.reconciles.labels("InferenceService", "failed").inc()
            raise
        except build.SpecRefused as exc:
            await _fail(rt, body, exc.reason, str(exc))
            rt.metrics.reconciles.labels("InferenceService", "failed").inc()
            raise kopf.PermanentError(str(exc)) from None
        try:
            phase = await _converge(rt, body, isvc)
        except KubeError as exc:
            if exc.permanent:  # refused (403, 422, a foreign object): say so, never retry in a loop
                reason = "NotOwned" if isinstance(exc, NotOwned) else f"APIRefused{exc.status}"
                await _fail(rt, body, reason, str(exc))
                rt.metrics.reconciles.labels("InferenceService", "failed").inc()
                raise kopf.PermanentError(str(exc)) from None
            rt.metrics.reconciles.labels("InferenceService", "retry").inc()
            raise kopf.TemporaryError(f"API call failed: {exc}", delay=rt.backoff.next_delay(key, exc)) from exc
        rt.backoff.reset(key)
        rt.reconciled[key] = asyncio.get_running_loop().time()
        rt.metrics.reconciles.labels("InferenceService", "ok").inc()
        return phase


async def _ensure_service(rt: Runtime, body: Mapping[str, Any], isvc: InferenceService) -> dict[str, Any]:
    desired = build.build_service(isvc)
    service, created = await rt.kube.ensure(desired)
    if created:
        event(body, reason="ServiceCreated", message=f"Created Service {isvc.name}")
        return service
    spec = service.get("spec") or {}
    want = desired["spec"]
    have_port: dict[str, Any] = next(iter(spec.get("ports") or []), {})
    want_port = want["ports"][0]
    if (
        spec.get("type") != want["type"]
        or have_port.get("port") != want_port["port"]
        or ("nodePort" in want_port and have_port.get("nodePort") != want_port["nodePort"])
    ):
        service = await rt.kube.patch(SERVICE, isvc.namespace, isvc.name, {"spec": want})
        event(body, reason="ServiceUpdated", message=f"Updated Service {isvc.name}")
    return service


async def _converge(rt: Runtime, body: Mapping[str, Any], isvc: InferenceService) -> str:
    ns, name, uid = isvc.namespace, isvc.name, isvc.metadata.uid
    service = await _ensure_service(rt, body, isvc)
    pods = await rt.kube.list(POD, ns, build.selector(name), owner_uid=uid)
    plan = build.plan_pods(isvc, pods, build.template_hash(isvc, rt.settings))
    for index in plan.create:
        _, created = await rt.kube.ensure(build.build_pod(isvc, index, rt.settings))
        if created:
            event(body, reason="PodCreated", message=f"Created pod {build.pod_name(name, index)}")
    for pod in plan.delete:
        if await rt.kube.delete(POD, ns, pod, uid):
            event(body, reason="PodDeleted", message=f"Deleted pod {pod} (scale down or spec change)")
    if not plan.empty:
        pods = await rt.kube.list(POD, ns, build.selector(name), owner_uid=uid)

    observed = build.observe(isvc, pods)
    current = body.get("status") or {}
    status: dict[str, Any] = {
        "phase": observed.phase,
        "replicas": observed.existing,
        "readyReplicas": observed.ready,
        "workers": isvc.spec.workers,
        "endpoint": build.endpoint(pods, service),
        "serviceURL": build.service_url(isvc, rt.settings),
        "pods": [build.pod_status(p).wire() for p in sorted(pods, key=_name)],
        "observedGeneration": body["metadata"].get("generation"),
    }
    rt.metrics.ready_replicas.labels(ns, name).set(observed.ready)
    conditions = set_condition(
        current.get("conditions"), "Ready", observed.phase == "Ready", observed.reason, observed.message
    )
    if differs(current, status) or differs({"c": current.get("conditions")}, {"c": conditions}):
        status["conditions"] = conditions
        clean = InferenceServiceStatus.model_validate(status).wire()
        await rt.kube.patch_status(ISVC, ns, name, {**clean, **{k: None for k, v in status.items() if v is None}})
        if current.get("phase") != observed.phase:
            event(body, reason=observed.phase, message=observed.message)
    return observed.phase


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


# --- kopf handlers (thin) ----------------------------------------------------------------------------


@kopf.on.resume(*RESOURCE, registry=REGISTRY)
@kopf.on.create(*RESOURCE, registry=REGISTRY)
@kopf.on.update(*RESOURCE, registry=REGISTRY)
async def on_change(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Spec created, changed, or seen again after an operator restart: converge."""
    await reconcile(runtime(memo), body)


@kopf.daemon(*RESOURCE, registry=REGISTRY, cancellation_timeout=5.0)
async def resync(body: kopf.Body, memo: kopf.Memo, stopped: kopf.DaemonStopped, **_: Any) -> None:
    """Safety net for missed pod events (events are the fast path): a reconcile whenever none happened for
    ``KINFER_OPERATOR_RESYNC_S``; it also retries what an earlier round reported as refused."""
    rt = runtime(memo)
    key = (body["metadata"]["namespace"], body["metadata"]["name"])
    loop = asyncio.get_running_loop()
    while not stopped:
        since = loop.time() - rt.reconciled.get(key, loop.time())
        await stopped.wait(max(0.1, rt.settings.resync_s - since))
        if stopped or loop.time() - rt.reconciled.get(key, 0.0) < rt.settings.resync_s:
            continue
        try:
            await reconcile(rt, body)
        except (kopf.PermanentError, kopf.TemporaryError) as exc:  # already in the status; retried next time
            log.info("resync of %s/%s: %s", *key, exc)
            rt.reconciled[key] = loop.time()


@kopf.on.event("v1", "pods", labels={SERVICE_LABEL: kopf.PRESENT}, registry=REGISTRY)
async def on_pod_event(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A server pod changed or vanished: recreate it if needed and refresh the owner's status."""
    rt = runtime(memo)
    owner = (body.get("metadata", {}).get("labels") or {}).get(SERVICE_LABEL)
    namespace = body.get("metadata", {}).get("namespace")
    if not owner or not namespace:
        return
    isvc = await rt.kube.get(ISVC, namespace, owner)
    if isvc is None or isvc["metadata"].get("deletionTimestamp"):
        return
    try:
        await reconcile(rt, isvc)
    except (kopf.PermanentError, kopf.TemporaryError) as exc:
        log.info("reconcile of %s/%s after a pod event: %s", namespace, owner, exc)


@kopf.on.delete(*RESOURCE, registry=REGISTRY, optional=True)
async def on_delete(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Forget the service's metrics and lock. Its pods and Service carry its owner reference: the
    garbage collector deletes them."""
    rt = runtime(memo)
    ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
    with contextlib.suppress(KeyError):
        rt.metrics.ready_replicas.remove(ns, name)
    rt.locks.pop((ns, name), None)
    rt.backoff.reset((ns, name))
    rt.reconciled.pop((ns, name), None)
