"""Run a :class:`~kinfer.local.plan.Plan`: servers up and ready, generators run, everything stopped.

Order: every InferenceService's replicas start and must become ready (``/v2/health/ready``); balancers
start; generators start together, each scraping its target's replicas' ``/metrics`` once per record
for the server's CPU, memory and GPU (``--server-metrics``, as on a cluster); the view refreshes every
second from the generators' status; when all generators exit (or on Ctrl-C, which asks them to stop
and flush) every process group is stopped and each experiment's report is written from its results
directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from kinfer.api.slo import Verdict, capacity_verdict, evaluate, latency_from_summary, success_text
from kinfer.local import dashboards, monitor, processes, view
from kinfer.local.balancer import RandomBalancer
from kinfer.local.limits import write_limits
from kinfer.local.plan import LOOPBACK, ExperimentPlan, Plan

READY_TIMEOUT_S = 180.0
STOP_GRACE_S = 15.0


@dataclass
class ExperimentOutcome:
    """How one experiment ended."""

    plan: ExperimentPlan
    exit_code: int | None
    summary: dict[str, Any] | None
    verdict: Verdict | None
    report: Path | None = None


@dataclass
class RunOutcome:
    """How the whole run ended."""

    experiments: list[ExperimentOutcome] = field(default_factory=list)
    interrupted: bool = False
    error: str | None = None


def _read_summary(results: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads((results / "summary.json").read_text())
        return data
    except (OSError, ValueError):
        return None


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"the generator was killed by {signal.Signals(-code).name}"
    return f"the generator exited with code {code}"


def mark_failed(results: Path, summary: dict[str, Any], reason: str) -> dict[str, Any]:
    """Rewrite a summary the generator could not finish (it died): phase Failed, the reason, and
    ``incomplete``; its measurements, up to the last record it wrote, stay as they were."""
    summary = {
        **summary,
        "phase": "Failed",
        "error": f"{reason}; results cover its records up to then",
        "incomplete": True,
    }
    slo = summary.get("slo")
    if isinstance(slo, dict) and slo.get("met") is not None:
        summary["slo"] = {**slo, "met": False}
    tmp = results / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2))
    tmp.replace(results / "summary.json")
    return summary


def verdict_of(plan: ExperimentPlan, summary: dict[str, Any] | None) -> Verdict | None:
    """The SLO verdict from the generator's summary (None when nothing was measured); a run that
    failed is never met, whatever its partial numbers say."""
    if summary is None:
        return None
    if summary.get("phase") == "Failed":
        offered = int(summary.get("sent") or 0) + int(summary.get("dropped") or 0)
        rate = success_text(int(summary.get("completed") or 0), offered)
        return Verdict(False, "RunFailed", f"run failed: {summary.get('error') or 'no reason given'}; {rate}")
    capacity = summary.get("capacity")
    if isinstance(capacity, dict):  # capacity mode: met when some rate >= minRPS meets the SLO
        return capacity_verdict(capacity)
    latency = summary.get("latencyMs") or {}
    sent, completed, dropped = (int(summary.get(k) or 0) for k in ("sent", "completed", "dropped"))
    slo = plan.resource.spec.slo
    return evaluate(slo, latency.get("p99"), sent, completed, dropped, latency_at=latency_from_summary(latency))


class Runner:
    """Owns every child process and balancer of one ``kinfer run``."""

    def __init__(self, plan: Plan, logs: Path, console: Any, live_view: bool) -> None:
        self.plan = plan
        self.logs = logs
        self.console = console
        self.live_view = live_view
        self.servers: dict[str, list[processes.Child]] = {}
        self.generators: dict[str, processes.Child] = {}
        self.balancers: dict[str, RandomBalancer] = {}
        self.stop_requested = asyncio.Event()
        #: The generators' control token (on loopback too: other users of this machine reach loopback).
        self.token = secrets.token_urlsafe(24)
        self.auth = {"Authorization": f"Bearer {self.token}"}

    def dashboard_url(self, exp: ExperimentPlan) -> str:
        """The dashboard with the token its controls send (printed on this user's own terminal only)."""
        return f"{exp.control_url}/#token={self.token}"

    async def start_servers(self) -> None:
        """Start every replica, then wait until all are ready."""
        for server in self.plan.servers:
            children = []
            for index, argv in enumerate(server.argv):
                label = f"InferenceService {server.name} replica {index}"
                log = self.logs / f"{server.name}-{index}.log"
                children.append(await processes.start(label, list(argv), server.env_for(index), log))
            self.servers[server.name] = children
        waits = []
        for server in self.plan.servers:
            for index, child in enumerate(self.servers[server.name]):
                url = server.replica_url(index) + "/v2/health/ready"
                waits.append(processes.wait_http_ok(url, child, READY_TIMEOUT_S))
        await self._until_stopped(asyncio.gather(*waits))
        for server in self.plan.servers:
            if server.balancer_port is not None:
                balancer = RandomBalancer([server.replica_url(i) for i in range(len(server.replica_ports))])
                await balancer.start(LOOPBACK, server.balancer_port)
                self.balancers[server.name] = balancer

    async def _until_stopped(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        stopper = asyncio.ensure_future(self.stop_requested.wait())
        done, _ = await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            stopper.cancel()
            task.result()
        else:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, RuntimeError):
                await task

    async def start_generators(self) -> None:
        """Write each schedule file and start each generator."""
        for exp in self.plan.experiments:
            exp.results_dir.mkdir(parents=True, exist_ok=True)
            (exp.results_dir / "schedule.json").write_text(json.dumps(exp.schedule, indent=2))
            label = f"LoadExperiment {exp.name} generator"
            env = {"KINFER_LOADGEN_CONTROL_TOKEN": self.token}
            child = await processes.start(label, list(exp.argv), env, self.logs / f"{exp.name}-loadgen.log")
            self.generators[exp.name] = child

    async def _push_initial_intensity(self, session: aiohttp.ClientSession) -> None:
        for exp in self.plan.experiments:
            rps = exp.resource.spec.intensity
            if rps is None:
                continue
            for _ in range(50):
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    url = exp.control_url + "/api/intensity"
                    async with session.post(url, json={"rps": rps}, headers=self.auth) as resp:
                        if resp.status == 200:
                            break
                await asyncio.sleep(0.1)

    async def watch(self) -> None:
        """Refresh the view until every generator has exited or a stop is asked."""
        rows = {
            e.name: view.Row(e.name, self.dashboard_url(e), e.resource.spec.duration_s) for e in self.plan.experiments
        }
        timeout = aiohttp.ClientTimeout(total=1.0)
        live = None
        if self.live_view:
            from rich.live import Live

            live = Live(view.render_table(list(rows.values())), console=self.console, refresh_per_second=4)
            live.start()
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session:
                await self._push_initial_intensity(session)
                stopping = False
                while any(c.running for c in self.generators.values()):
                    if self.stop_requested.is_set() and not stopping:
                        stopping = True
                        await self._ask_generators_to_stop(session)
                    for name, row in rows.items():
                        snap = await monitor.fetch_status(session, self.plan_by_name(name).control_url)
                        if snap is not None:
                            row.snapshot = snap
                        elif not self.generators[name].running:
                            row.phase = "Exited"
                    if live is not None:
                        live.update(view.render_table(list(rows.values())))
                    else:
                        for line in view.plain_lines(list(rows.values())):
                            self.console.print(line, soft_wrap=True)
                    await self._pause(1.0, stopping)
        finally:
            if live is not None:
                live.stop()

    async def _pause(self, seconds: float, stopping: bool) -> None:
        """Wait one refresh, waking early when a stop is requested (once)."""
        if stopping:
            await asyncio.sleep(min(seconds, 0.25))
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop_requested.wait(), seconds)

    def plan_by_name(self, name: str) -> ExperimentPlan:
        """The experiment plan called ``name``."""
        return next(e for e in self.plan.experiments if e.name == name)

    async def _ask_generators_to_stop(self, session: aiohttp.ClientSession) -> None:
        for exp in self.plan.experiments:
            child = self.generators.get(exp.name)
            if child is None or not child.running:
                continue
            try:
                async with session.post(exp.control_url + "/api/stop", json={}, headers=self.auth) as resp:
                    await resp.read()
            except (aiohttp.ClientError, TimeoutError):
                with contextlib.suppress(ProcessLookupError):
                    child.proc.send_signal(signal.SIGINT)

    async def shutdown(self) -> dict[str, int | None]:
        """Stop generators (they flush results), then balancers and servers; return generator exit codes."""
        codes = {}
        for name, child in self.generators.items():
            codes[name] = await processes.stop(child, STOP_GRACE_S)
        for balancer in self.balancers.values():
            await balancer.close()
        await asyncio.gather(*(processes.stop(c, STOP_GRACE_S) for cs in self.servers.values() for c in cs))
        return codes

    def all_children(self) -> list[processes.Child]:
        """Every process started so far."""
        return [*self.generators.values(), *(c for cs in self.servers.values() for c in cs)]


async def run(plan: Plan, logs: Path, console: Any, live_view: bool) -> RunOutcome:
    """Execute ``plan``; SIGINT/SIGTERM stop it gracefully. Never leaves a child process behind."""
    runner = Runner(plan, logs, console, live_view)
    outcome = RunOutcome()
    loop = asyncio.get_running_loop()

    def request_stop() -> None:
        outcome.interrupted = True
        runner.stop_requested.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, request_stop)
    codes: dict[str, int | None] = {}
    overview: dashboards.Overview | None = None
    try:
        try:
            await runner.start_servers()
            if not runner.stop_requested.is_set():
                for server in plan.servers:
                    replicas = len(server.replica_ports)
                    console.print(f"InferenceService {server.name}: {replicas} replica(s) ready at {server.url}")
                for exp in plan.experiments:
                    console.print(
                        f"LoadExperiment {exp.name}: {exp.url}{exp.resource.spec.target.path} "
                        f"-> dashboard {runner.dashboard_url(exp)}",
                        soft_wrap=True,
                    )
                await runner.start_generators()
                listed = [dashboards.Listed(e.name, e.control_url) for e in plan.experiments]
                overview = await dashboards.start_overview(listed, runner.token, console)
                await runner.watch()
        except RuntimeError as exc:
            outcome.error = str(exc)
        finally:
            codes = await runner.shutdown()
            if overview is not None:
                await overview.close()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    for exp in plan.experiments:
        if exp.name not in runner.generators:
            continue
        summary = _read_summary(exp.results_dir)
        code = codes.get(exp.name)
        if summary is None or code not in (0, 1, None, -2, -15, 130):
            child = runner.generators[exp.name]
            problem = f"{child.label} exited with code {code}:\n{child.output_tail()}"
            outcome.error = f"{outcome.error}\n{problem}" if outcome.error else problem
            if summary is not None:
                summary = mark_failed(exp.results_dir, summary, _exit_reason(code))
        balancer = runner.balancers.get(exp.target_service or "")
        if balancer is not None:
            spread = {"backends": balancer.backends, "requests": balancer.counts}
            (exp.results_dir / "balancer.json").write_text(json.dumps(spread, indent=2))
        server_plan = next((s for s in plan.servers if s.name == exp.target_service), None)
        if server_plan is not None and server_plan.limits is not None and server_plan.limits.describe():
            write_limits(exp.results_dir, server_plan.limits.describe())
            summary = _read_summary(exp.results_dir) or summary
        outcome.experiments.append(ExperimentOutcome(exp, codes.get(exp.name), summary, verdict_of(exp, summary)))
    return outcome
