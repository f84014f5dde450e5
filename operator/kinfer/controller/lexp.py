"""LoadExperiment handlers: a daemon per experiment runs the phase machine; field handlers push changes.

The daemon waits for the target, creates the one generator Job (create-if-absent under a deterministic
name, so restarts never duplicate it), then polls the generators' control API every ``recordInterval``
and writes ONE status patch per interval; on completion it writes the stage table, the ``SLOMet``
condition and the results ConfigMap. ``spec.intensity`` changes are pushed at once by a field handler
(and re-checked by the daemon every interval, which also covers a generator that started later).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf
from pydantic import ValidationError

from kinfer.api import GROUP, VERSION, LoadExperiment, LoadExperimentStatus
from kinfer.api.manifests import describe_validation_error
from kinfer.controller import isvc_build
from kinfer.controller import lexp_build as build
from kinfer.controller import lexp_status as merge
from kinfer.controller import results as keep
from kinfer.controller.conditions import differs, find, set_condition
from kinfer.controller.generator import Generators, Unreachable, control_targets, control_urls, not_ready
from kinfer.controller.kube import CONFIGMAP, ISVC, JOB, LEXP, POD, SECRET, KubeError, NotOwned
from kinfer.controller.meta import EXPERIMENT_LABEL
from kinfer.controller.phases import Observation, Phase, next_phase
from kinfer.controller.runtime import REGISTRY, Runtime, event, runtime
from kinfer.stored_results import Stored

log = logging.getLogger("kinfer.operator.loadexperiment")
RESOURCE = (GROUP, VERSION, "loadexperiments")
#: How often a waiting experiment looks at its target again, seconds.
TARGET_POLL_S = 1.0
#: How often a running experiment looks for changes in its target's pods (a new generator is told at once).
SERVER_PODS_POLL_S = 5.0
#: The results ConfigMap's summary while the run goes on.
PENDING_SUMMARY = {"incomplete": True, "incompleteReason": "the run has not finished"}


class SpecInvalid(kopf.PermanentError):
    """The spec cannot be run; the message names the field."""


def plain(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A deep plain-dict copy of a kopf body or view (they are live mappings in daemons)."""
    result: dict[str, Any] = json.loads(json.dumps(obj, default=dict))
    return result


def typed_status(status: Mapping[str, Any]) -> dict[str, Any]:
    """The patch as the schema declares it (typed, no nulls inside); top-level ``None`` still deletes."""
    clean = LoadExperimentStatus.model_validate(status).wire()
    return {**clean, **{k: None for k, v in status.items() if v is None}}


def parse(body: Mapping[str, Any]) -> LoadExperiment:
    """The typed resource; an invalid spec is a :class:`SpecInvalid` naming the field."""
    doc = {k: body[k] for k in ("apiVersion", "kind", "metadata", "spec") if k in body}
    try:
        return LoadExperiment.model_validate(doc)
    except ValidationError as exc:
        raise SpecInvalid(describe_validation_error(exc)) from None


@dataclass
class RunState:
    """What one daemon remembers between rounds (lost on restart; the status holds the rest)."""

    last: dict[str, Any] | None = None
    failures: int = 0
    stopped: set[str] = field(default_factory=set)
    """Control URLs told to stop for ``spec.stop`` (a generator still starting then is told when it answers)."""
    patches: int = 0
    urls: list[str] = field(default_factory=list)
    pending: bool = False
    """Every generator pod of the Job is still Pending (none has started)."""
    by_index: dict[int, dict[str, Any]] = field(default_factory=dict)
    """The last snapshot of each generator (completion index): finished ones keep their final numbers."""
    targets: dict[int, str] = field(default_factory=dict)
    """Completion index → control URL of the generators running now."""
    keeper: keep.ResultsKeeper | None = None
    """Stores the records in the cluster as they come (recovers where it was after a restart)."""
    server_urls: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Control URL → the target's /metrics URLs last pushed to that generator."""
    no_server_metrics: bool = False
    """A generator answered 404 to ``POST /api/server-metrics`` (an older image; logged once)."""
    server_pods_read: float | None = None
    """When the target's pods were last listed (event-loop time)."""


class Experiment:
    """One round of the phase machine for one experiment."""

    def __init__(self, rt: Runtime, body: Mapping[str, Any], gens: Generators, state: RunState) -> None:
        self.rt = rt
        self.raw = plain(body)
        self.gens = gens
        self.state = state
        self.status: dict[str, Any] = self.raw.get("status") or {}
        meta = self.raw["metadata"]
        self.ns: str = meta["namespace"]
        self.name: str = meta["name"]
        self.uid: str | None = meta.get("uid")

    async def patch(self, status: dict[str, Any]) -> None:
        """The one status write of this round."""
        status["observedGeneration"] = self.raw["metadata"].get("generation")
        await self.rt.kube.patch_status(LEXP, self.ns, self.name, typed_status(status))
        self.state.patches += 1

    def condition(self, type_: str, ok: bool | str, reason: str, message: str) -> list[dict[str, Any]]:
        """The status conditions with one set (kept across the round's patch)."""
        conditions = set_condition(self.status.get("conditions"), type_, ok, reason, message)
        self.status["conditions"] = conditions
        return conditions

    async def step(self) -> float | None:
        """Run one round; the seconds until the next one, or ``None`` when the daemon is done."""
        try:
            lexp = parse(self.raw)
        except SpecInvalid as exc:
            await self.fail("InvalidSpec", str(exc))
            return None
        current = Phase.of(self.status.get("phase"))
        if current.terminal:
            self.rt.metrics.forget_experiment(self.ns, self.name)
            return None
        job = await self.rt.kube.get_owned(JOB, self.ns, build.job_name(self.name), self.uid)
        match current:
            case Phase.PENDING | Phase.WAITING_FOR_TARGET:
                return await self.start(lexp, current, job)
            case Phase.RUNNING:
                return await self.watch(lexp, job)
        return None

    async def fail(self, reason: str, message: str) -> None:
        """Phase Failed with the reason in the Progressing condition."""
        if (
            self.status.get("phase") == Phase.FAILED
            and (find(self.status.get("conditions"), "Progressing") or {}).get("reason") == reason
        ):
            return
        await self.patch(
            {"phase": Phase.FAILED.value, "conditions": self.condition("Progressing", False, reason, message)}
        )
        event(self.raw, warning=True, reason=reason, message=message)

    # --- Pending / WaitingForTarget -------------------------------------------------------------

    async def start(self, lexp: LoadExperiment, current: Phase, job: dict[str, Any] | None) -> float | None:
        target = build.Target(None)
        if job is None:
            isvc = None
            if lexp.spec.target.service is not None:
                isvc = await self.rt.kube.get(ISVC, self.ns, lexp.spec.target.service)
            target = build.resolve_target(lexp, isvc)
        seen = Observation(
            job_exists=job is not None, target_ready=target.url is not None, stop_requested=lexp.spec.stop
        )
        phase = next_phase(current, seen)
        match phase:
            case Phase.WAITING_FOR_TARGET:
                desired = {"phase": phase.value}
                conditions = self.condition("Progressing", False, target.reason, target.message)
                if differs(self.raw.get("status"), desired) or differs(
                    {"c": (self.raw.get("status") or {}).get("conditions")}, {"c": conditions}
                ):
                    await self.patch({**desired, "conditions": conditions})
                    event(self.raw, reason="WaitingForTarget", message=target.message)
                return TARGET_POLL_S
            case Phase.STOPPED:
                await self.patch(
                    {
                        "phase": phase.value,
                        "conditions": self.condition("Progressing", False, "Stopped", "stopped before it started"),
                    }
                )
                return None
            case Phase.RUNNING:
                status: dict[str, Any] = {"phase": phase.value}
                if job is None:
                    assert target.url is not None
                    # What the Job's pods mount and read, at once. The results object exists from the
                    # start (marked incomplete until the run ends): a reader always finds where results
                    # go, and the end only patches it.
                    await asyncio.gather(
                        self.control_token(lexp),
                        self.rt.kube.ensure(build.build_schedule_configmap(lexp)),
                        self.rt.kube.ensure(build.build_results_configmap(lexp, PENDING_SUMMARY)),
                        self.guard_control_port(lexp),
                    )
                    _, created = await self.rt.kube.ensure(build.build_job(lexp, target.url, self.rt.settings))
                    if created:
                        event(self.raw, reason="JobCreated", message=f"Created Job {build.job_name(self.name)}")
                    status["targetURL"] = target.url
                status["results"] = {"job": build.job_name(self.name), "path": build.RESULTS_DIR}
                status["conditions"] = self.condition(
                    "Progressing", True, "GeneratorStarting", "waiting for the generator to answer"
                )
                await self.patch(status)
                return 0.5
        return None

    async def control_token(self, lexp: LoadExperiment) -> str | None:
        """The generators' control token: created with the Secret before the Job, read back after a restart."""
        if self.gens.token is None:
            secret, _ = await self.rt.kube.ensure(build.build_control_secret(lexp, secrets.token_urlsafe(32)))
            self.gens.token = build.secret_token(secret)
        return self.gens.token

    async def guard_control_port(self, lexp: LoadExperiment) -> None:
        """A NetworkPolicy admitting only the operator's pods, when the operator knows its namespace."""
        namespace = self.rt.settings.operator_namespace
        if namespace:
            await self.rt.kube.ensure(
                build.build_network_policy(lexp, namespace, self.rt.settings.scraper_namespace)
            )

    # --- Running --------------------------------------------------------------------------------

    async def poll(
        self, lexp: LoadExperiment, job: dict[str, Any] | None
    ) -> tuple[list[str], list[dict[str, Any]], list[str]]:
        """(control URLs, their snapshots, errors); pushes a drifted intensity while at it.

        A generator whose pod is not Ready yet and that never answered is starting, not failing: a call
        it refuses is no error (no backoff, no ``GeneratorUnreachable``), so the first numbers come one
        record interval after it listens, however long its container took to start."""
        if self.gens.token is None:
            secret = await self.rt.kube.get_owned(SECRET, self.ns, build.control_secret_name(self.name), self.uid)
            self.gens.token = build.secret_token(secret) if secret else None
        pods = await generator_pods(self.rt, self.ns, self.name, job)
        self.state.pending = all((p.get("status") or {}).get("phase", "Pending") == "Pending" for p in pods)
        targets = control_targets(pods, lexp.spec.control_port)
        urls = list(targets.values())
        self.state.urls = urls
        self.state.targets = targets
        self.rt.generators[(self.ns, self.name)] = (urls, self.gens.token)
        several = lexp.spec.parallelism > 1  # exact merging needs each pod's histograms
        # with the full summary: stored with the records, it outlives a generator that is killed
        starting = not_ready(pods) - set(self.state.by_index)
        results = await asyncio.gather(*(self.gens.final(u, several) for u in urls), return_exceptions=True)
        for exc in results:
            if isinstance(exc, BaseException) and not isinstance(exc, Unreachable):
                raise exc
        answered = {index: r for index, r in zip(targets, results, strict=True) if isinstance(r, dict)}
        errors = [str(r) for index, r in zip(targets, results, strict=True)
                  if isinstance(r, BaseException) and index not in starting]  # fmt: skip
        self.state.by_index.update(answered)
        snapshots = list(answered.values())
        if not errors and answered:
            want = None if lexp.spec.intensity is None else build.share(lexp.spec.intensity, lexp.spec.parallelism)
            for index, snap in answered.items():
                have = snap.get("intensity")
                if snap.get("phase") in ("Pending", "Running") and not _same(have, want):
                    await self.gens.set_intensity(targets[index], want)
            todo = [targets[i] for i in answered if targets[i] not in self.state.stopped]
            if lexp.spec.stop and todo and any(s.get("phase") == "Running" for s in snapshots):
                if not self.state.stopped:
                    event(self.raw, reason="Stopping", message="spec.stop: ending the run gracefully")
                for url in todo:
                    await self.gens.stop(url)
                    self.state.stopped.add(url)
        return urls, snapshots, errors

    async def watch(self, lexp: LoadExperiment, job: dict[str, Any] | None) -> float | None:
        interval = lexp.spec.record_interval_s
        try:
            urls, snapshots, errors = await self.poll(lexp, job)
        except Unreachable as exc:
            urls, snapshots, errors = self.state.urls, [], [str(exc)]
        await self.keep_results(lexp)
        await self.push_server_metrics(lexp)
        expected = lexp.spec.parallelism
        covered = len(self.state.by_index)
        # Numbers and the phase come from every generator or from none: half the pods is not half a run.
        complete = covered >= expected and bool(snapshots) and not errors
        snapshot = merge.merge([self.state.by_index[i] for i in sorted(self.state.by_index)]) if complete else None
        if snapshot is not None:
            self.state.last = snapshot
            self.state.failures = 0
        generator_phase = snapshot.get("phase") if snapshot else None
        seen = Observation(
            job_exists=job is not None,
            stop_requested=lexp.spec.stop,
            generator_phase=generator_phase,
            job_finished=build.job_finished(job),
            generators_pending=self.state.pending and not errors,
        )
        phase = next_phase(Phase.RUNNING, seen)
        if phase.terminal:
            await self.finish(lexp, phase, snapshot, job)
            return None
        if errors:
            self.rt.metrics.poll_errors.inc()
            self.state.failures += 1
            message = f"generator unreachable ({self.state.failures}x): {errors[0]}"
            reason = "GeneratorUnreachable"
            if (find(self.status.get("conditions"), "Progressing") or {}).get("reason") != reason:
                await self.patch({"conditions": self.condition("Progressing", "Unknown", reason, message)})
            return float(min(interval * 2.0 ** min(self.state.failures, 10), self.rt.settings.max_backoff_s))
        coverage = {"expected": expected, "reporting": covered}
        if snapshot is None:  # generator pods not (all) running yet
            if covered and self.status.get("generators") != coverage:
                message = f"{covered} of {expected} generators reporting; the numbers wait for all of them"
                await self.patch({"generators": coverage,
                                  "conditions": self.condition("Progressing", True, "GeneratorsStarting", message)})
            return interval
        status = merge.live_status(snapshot)
        status["phase"] = Phase.RUNNING.value
        status["generators"] = coverage
        if (find(self.status.get("conditions"), "Progressing") or {}).get("reason") != "Running":
            status["conditions"] = self.condition("Progressing", True, "Running", f"{len(urls)} generator(s) running")
        live = status.get("live") or {}
        self.rt.metrics.experiment(
            self.ns,
            self.name,
            status.get("targetRPS"),
            live.get("realRPS"),
            live.get("p99Ms"),
            status.get("serviceRate"),
            live.get("realQPS"),
        )
        await self.patch(status)
        return interval

    async def finish(
        self, lexp: LoadExperiment, phase: Phase, snapshot: dict[str, Any] | None, job: dict[str, Any] | None
    ) -> None:
        """Terminal phase: stage table, SLOMet, results ConfigMap; then release the generators' linger.

        ``snapshot`` is what every generator reported this round (their final numbers), or ``None``: then
        the last numbers read this run, or failing that the last status, stand in, and the results say
        they are incomplete and why (a verdict never flatters)."""
        never_started = phase is Phase.STOPPED and self.state.pending and job is not None
        if never_started:  # the generator pods never start: suspending the Job removes them
            assert job is not None
            await self.rt.kube.patch(JOB, self.ns, job["metadata"]["name"], {"spec": {"suspend": True}})
        ended = await self.generator_endings(job) if phase is Phase.FAILED else []
        incomplete: str | None = None
        if never_started:
            incomplete = "stopped before any generator started: nothing was sent"
        elif ended:
            incomplete = f"a generator ended before the run did ({'; '.join(ended)}): numbers up to its last record"
        elif snapshot is None and self.state.last is not None:
            incomplete = "the generators' final numbers could not be read: numbers up to the last record read"
        elif snapshot is None:
            incomplete = "built from the last status: the generators had ended when it was read"
        finals = None
        if snapshot is not None:
            finals = [self.state.by_index[i].get("summary") for i in sorted(self.state.by_index)]
        if snapshot is None:
            snapshot = self.state.last
        if snapshot is None:  # nothing read this run (e.g. restarted after the generator exited)
            snapshot = {k: self.status.get(k) for k in ("sent", "completed", "errors", "dropped", "stages")}
            snapshot["phase"] = phase.value
        status = merge.live_status(snapshot)
        status["phase"] = phase.value
        status["stage"] = None
        status["targetRPS"] = 0.0
        stored = await self.keep_results(lexp, final=True)
        generator_summaries = [f for f in finals or [] if isinstance(f, dict)]
        hists = [h for _, s in sorted(self.state.by_index.items()) if isinstance(h := s.get("histograms"), dict)]
        summary, source = keep.final_summary(
            lexp, phase.value, generator_summaries, hists, stored, snapshot, self.status.get("targetURL")
        )
        if source == "stored":
            why = "the summary is built from the records and summaries stored during the run"
            lost = "the generators' final summaries were not read"
            incomplete = f"{incomplete}; {why}" if incomplete else f"{lost}: {why}"
        if incomplete:
            summary["incomplete"] = True
            summary["incompleteReason"] = incomplete
        if not incomplete or not await self.has_final_summary():
            await self.rt.kube.replace_data(build.build_results_configmap(lexp, summary))
        status["results"] = {
            "configMap": build.results_name(self.name),
            "job": build.job_name(self.name),
            "path": build.RESULTS_DIR,
        }
        log.info("%s/%s: results stored (%d records, summary from %s)", self.ns, self.name,
                 summary.get("records") or 0, source)  # fmt: skip
        verdict = merge.verdict(lexp.spec.slo, snapshot)
        if phase is Phase.FAILED:
            reason = "GeneratorFailed" if job is not None else "JobMissing"
            causes = [str(snapshot.get("error") or _job_message(job) or "the generator Job failed"), *ended]
            message = "; ".join(causes)
            self.condition("Progressing", False, reason, message)
            self.condition("SLOMet", False, "RunFailed", message)
        else:
            self.condition("Progressing", False, phase.value, f"run {phase.value.lower()}")
            self.condition("SLOMet", verdict.met, verdict.reason, verdict.message)
        status["conditions"] = self.status["conditions"]
        await self.patch(status)
        event(self.raw, reason=phase.value, message=f"experiment {phase.value.lower()}: {verdict.message}")
        self.rt.metrics.forget_experiment(self.ns, self.name)
        self.rt.generators.pop((self.ns, self.name), None)
        for url in self.state.urls:  # the second stop ends the generator's linger: the Job completes
            with contextlib.suppress(Unreachable):
                await self.gens.stop(url)


    async def keep_results(self, lexp: LoadExperiment, final: bool = False) -> Stored:
        """Store the records the generators have not handed over yet (one ConfigMap write at most);
        what is stored. A failed write is logged and retried next round (the generator still has them)."""
        if self.state.keeper is None:
            self.state.keeper = keep.ResultsKeeper(self.rt.kube, lexp)
        keeper = self.state.keeper
        summaries = {
            i: s["summary"] for i, s in self.state.by_index.items() if isinstance(s.get("summary"), dict)
        }
        try:
            await keeper.pull(self.gens, self.state.targets, summaries, final=final)
        except KubeError as exc:
            if exc.permanent:
                raise
            log.warning("%s/%s: cannot store records (retried next round): %s", self.ns, self.name, exc)
        return await keeper.recover()

    async def push_server_metrics(self, lexp: LoadExperiment) -> None:
        """Tell each generator where the target InferenceService's pods serve ``/metrics`` (ready pods
        it owns, its port), whenever that list changes (looked at every :data:`SERVER_PODS_POLL_S`) or a
        generator is new (restarted: told at once)."""
        name = lexp.spec.target.service
        if name is None or not self.state.targets or self.state.no_server_metrics:
            return
        now = asyncio.get_running_loop().time()
        told = all(base in self.state.server_urls for base in self.state.targets.values())
        if told and self.state.server_pods_read is not None and now - self.state.server_pods_read < SERVER_PODS_POLL_S:
            return
        self.state.server_pods_read = now
        isvc = await self.rt.kube.get(ISVC, self.ns, name)
        if isvc is None:
            return
        uid = (isvc.get("metadata") or {}).get("uid")
        port = int((isvc.get("spec") or {}).get("port") or 5000)
        pods = await self.rt.kube.list(POD, self.ns, isvc_build.selector(name), owner_uid=uid)
        urls = tuple(sorted(
            f"http://{ip}:{port}/metrics"
            for pod in pods
            if isvc_build.is_ready(pod) and (ip := (pod.get("status") or {}).get("podIP"))
        ))  # fmt: skip
        for base in self.state.targets.values():
            if self.state.server_urls.get(base) == urls:
                continue
            try:
                if not await self.gens.server_metrics(base, urls):
                    self.state.no_server_metrics = True
                    log.info("%s/%s: the generator has no POST /api/server-metrics (an older image): the "
                             "records carry no server resources", self.ns, self.name)  # fmt: skip
                    return
            except Unreachable as exc:
                log.debug("%s/%s: server metrics not pushed: %s", self.ns, self.name, exc)
                continue
            self.state.server_urls[base] = urls

    async def generator_endings(self, job: Mapping[str, Any] | None) -> list[str]:
        """How failed generator pods ended: ``pod P: exit code 137 (Error)`` (a kubelet's words)."""
        out = []
        for pod in await generator_pods(self.rt, self.ns, self.name, job):
            if (pod.get("status") or {}).get("phase") != "Failed":
                continue
            for container in (pod.get("status") or {}).get("containerStatuses") or []:
                ended = (container.get("state") or {}).get("terminated") or {}
                if ended:
                    what = f"exit code {ended.get('exitCode')}"
                    if ended.get("signal"):
                        what += f", signal {ended['signal']}"
                    out.append(f"pod {pod['metadata']['name']}: {what} ({ended.get('reason') or 'Error'})")
                    break
            else:
                out.append(f"pod {pod['metadata']['name']} failed")
        return out

    async def has_final_summary(self) -> bool:
        """Whether the results ConfigMap already holds a summary read from the generators themselves."""
        existing = await self.rt.kube.get_owned(CONFIGMAP, self.ns, build.results_name(self.name), self.uid)
        text = ((existing or {}).get("data") or {}).get("summary.json")
        if not text:
            return False
        try:
            return not json.loads(text).get("incomplete")
        except ValueError:
            return False


async def generator_pods(rt: Runtime, namespace: str, name: str, job: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The generator pods of the experiment's own Job (found through the Job's uid, never by label alone)."""
    job_uid = ((job or {}).get("metadata") or {}).get("uid")
    if not job_uid:
        return []
    return await rt.kube.list(POD, namespace, {EXPERIMENT_LABEL: name}, owner_uid=job_uid)


def _same(a: Any, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return isinstance(a, int | float) and abs(float(a) - b) < 1e-6


def _job_message(job: Mapping[str, Any] | None) -> str | None:
    for cond in ((job or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Failed" and cond.get("status") == "True":
            return f"Job failed: {cond.get('reason', '')} {cond.get('message', '')}".strip()
    return None


async def run_experiment(rt: Runtime, body: Mapping[str, Any], stopped: kopf.DaemonStopped) -> None:
    """The daemon's loop: one :class:`Experiment` round per record interval until a terminal phase."""
    state = RunState()
    loop = asyncio.get_running_loop()
    key = (body["metadata"]["namespace"], body["metadata"]["name"])
    planned = loop.time()  # when this round was due: rounds keep to a grid, so API latency does not add up
    async with Generators() as gens:
        while not stopped:
            began = loop.time()
            try:
                delay = await Experiment(rt, body, gens, state).step()
                rt.backoff.reset(key)
            except KubeError as exc:
                if exc.permanent:  # refused (403, 422, a foreign object): Failed with the server's words
                    reason = "NotOwned" if isinstance(exc, NotOwned) else f"APIRefused{exc.status}"
                    log.warning("%s/%s: %s", *key, exc)
                    try:
                        await Experiment(rt, body, gens, state).fail(reason, str(exc))
                    except KubeError as again:
                        log.warning("%s/%s: cannot record the failure: %s", *key, again)
                    return
                delay = rt.backoff.next_delay(key, exc)
                log.warning("%s/%s: API call failed (retry in %.1fs): %s", *key, delay, exc)
            if delay is None:
                return
            planned += delay
            if planned < began:  # more than a whole interval late: start the grid again from now
                planned = began + delay
            await stopped.wait(max(0.05, planned - loop.time()))
    rt.metrics.forget_experiment(body["metadata"]["namespace"], body["metadata"]["name"])


# --- kopf handlers (thin) ----------------------------------------------------------------------------


@kopf.daemon(*RESOURCE, registry=REGISTRY, cancellation_timeout=5.0)
async def experiment_daemon(body: kopf.Body, memo: kopf.Memo, stopped: kopf.DaemonStopped, **_: Any) -> None:
    """One per experiment, from creation (or operator start) until the experiment is over."""
    await run_experiment(runtime(memo), body, stopped)


@kopf.on.field(*RESOURCE, field="spec.intensity", registry=REGISTRY)
async def on_intensity(body: kopf.Body, new: Any, memo: kopf.Memo, **_: Any) -> None:
    """Push the new rate to every generator now (``None``: back to the schedule)."""
    rt = runtime(memo)
    lexp = parse(plain(body))
    if Phase.of((body.get("status") or {}).get("phase")) is not Phase.RUNNING:
        return  # the daemon applies it when the generator first answers
    known = rt.generators.get((lexp.namespace, lexp.name))
    if known is not None and known[0]:
        urls, token = known
    else:  # the daemon has not seen them yet (or this operator just started): ask the API
        uid = lexp.metadata.uid
        job = await rt.kube.get_owned(JOB, lexp.namespace, build.job_name(lexp.name), uid)
        pods = await generator_pods(rt, lexp.namespace, lexp.name, job)
        secret = await rt.kube.get_owned(SECRET, lexp.namespace, build.control_secret_name(lexp.name), uid)
        urls, token = control_urls(pods, lexp.spec.control_port), build.secret_token(secret) if secret else None
    want = None if new is None else build.share(float(new), lexp.spec.parallelism)
    async with Generators(token) as gens:
        for url in urls:
            try:
                await gens.set_intensity(url, want)
            except Unreachable as exc:
                raise kopf.TemporaryError(f"cannot reach the generator: {exc}", delay=1) from exc
    event(body, reason="Intensity", message=f"intensity set to {new if new is not None else 'schedule'}")


@kopf.on.delete(*RESOURCE, registry=REGISTRY, optional=True)
async def on_delete(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Forget the experiment's metrics. Its Job, pods, ConfigMaps and Secret carry its owner reference:
    the garbage collector deletes them (the operator needs no delete permission for them)."""
    rt = runtime(memo)
    ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
    rt.metrics.forget_experiment(ns, name)
    rt.backoff.reset((ns, name))
    rt.generators.pop((ns, name), None)
