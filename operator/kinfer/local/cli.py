"""``kinfer run FILE... [--results DIR] [--dashboard-port 8089] [--no-dashboard]``.

Runs the manifests' InferenceServices and LoadExperiments as local processes, shows them live, writes
each experiment's results and report, and exits 0 when every SLO is met (or none is set), 1 when one
fails or the run could not complete, 2 on bad input, 130 when interrupted. A Sweep runs its points one
at a time and writes the comparison (:mod:`kinfer.local.sweep`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from kinfer.api import InferenceService, ManifestError, Sweep, load_resources
from kinfer.local.plan import LOOPBACK, Plan, build_plan, missing_host_paths
from kinfer.local.runner import RunOutcome, run

EXIT_OK, EXIT_SLO, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"kinfer run: {message}\n")


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"KINFER_RUN_{name}", default)


def parser() -> argparse.ArgumentParser:
    """Flags of ``kinfer run`` (each also read from ``KINFER_RUN_<FLAG>``)."""
    p = _Parser(prog="kinfer run", description="Run InferenceService and LoadExperiment manifests locally.")
    p.add_argument("files", nargs="+", type=Path, help="manifest files (YAML, several documents each)")
    p.add_argument(
        "--results",
        type=Path,
        default=_env("RESULTS"),
        help="results root; each experiment writes DIR/<experiment>/ (default results/<exp>/<time>/)",
    )
    p.add_argument(
        "--dashboard-port",
        type=int,
        default=int(_env("DASHBOARD_PORT", "8089") or 8089),
        help="first experiment's dashboard/control port (next ones count up)",
    )
    p.add_argument(
        "--no-dashboard",
        action="store_true",
        default=_env("NO_DASHBOARD") in ("1", "true"),
        help="no fixed dashboard port (control APIs on free ports)",
    )
    p.add_argument("--plain", action="store_true", help="plain log lines instead of the live table")
    return p  # fmt: skip


def free_ports() -> Iterator[int]:
    """Ports the kernel says are free on loopback right now."""
    while True:
        with socket.socket() as s:
            s.bind((LOOPBACK, 0))
            yield s.getsockname()[1]


def check_paths(plan: Plan, services: list[InferenceService], base: Path) -> None:
    """Model, dataset and payload paths must exist before anything starts; a server's missing paths are
    named together, as the host paths this machine would need (through the manifest's volumes)."""
    for svc in services:
        missing = missing_host_paths(svc, base)
        if missing:
            raise ManifestError(
                f"InferenceService {svc.name} needs host paths that do not exist on this machine: "
                + "; ".join(missing)
                + " (copy them here, or build a model with `kinfer model build` as examples/local-demo.yaml does)"
            )
    for exp in plan.experiments:
        payload = exp.resource.spec.target.payload
        if ":" in payload:
            argv = list(exp.argv)
            resolved = Path(argv[argv.index("--payload") + 1].split(":", 1)[1])
            if not resolved.exists():
                raise ManifestError(f"LoadExperiment {exp.name}: spec.target.payload {resolved} does not exist")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def _run_sweeps(sweeps: list[Sweep], results_for: Callable[[str], Path], dashboard: int | None, plain: bool) -> int:
    """Each Sweep's points one at a time (:mod:`kinfer.local.sweep`)."""
    from kinfer.local.sweep import run_sweeps
    from kinfer.local.view import make_console

    console = make_console()

    def check(plan: Plan, services: list[InferenceService]) -> None:
        check_paths(plan, services, Path.cwd())

    return run_sweeps(sweeps, results_for, free_ports, dashboard, check, console, console.is_terminal and not plain)


def main(argv: list[str]) -> int:
    """Entry point of ``kinfer run``."""
    args = parser().parse_args(argv)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    default_root = args.results is None
    root = Path("results") if default_root else args.results
    try:
        resources = load_resources(args.files)
        if not resources:
            raise ManifestError("no InferenceService or LoadExperiment in " + ", ".join(map(str, args.files)))
        dashboard = None if args.no_dashboard else args.dashboard_port

        def results_for(name: str) -> Path:
            return root / name / stamp if default_root else root / name

        sweeps = [r for r in resources if isinstance(r, Sweep)]
        if sweeps:
            if len(sweeps) != len(resources):
                raise ManifestError("a Sweep runs its own InferenceService and LoadExperiment: run it in its own files")
            return _run_sweeps(sweeps, results_for, dashboard, args.plain)

        plan = build_plan(resources, free_ports(), results_for, dashboard, Path.cwd())
        check_paths(plan, [r for r in resources if isinstance(r, InferenceService)], Path.cwd())
        if dashboard is not None:
            for exp in plan.experiments:
                if not _port_free(exp.control_port):
                    raise ManifestError(
                        f"dashboard port {exp.control_port} is in use (use --dashboard-port or --no-dashboard)"
                    )
    except ManifestError as exc:
        print(f"kinfer run: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    from kinfer.local.report_step import finish
    from kinfer.local.view import make_console

    console = make_console()
    for note in plan.notes:
        console.print(f"note: {note}", soft_wrap=True)
    logs = root / "logs" / stamp
    live = console.is_terminal and not args.plain
    outcome: RunOutcome = asyncio.run(run(plan, logs, console, live))
    return finish(outcome, console, logs)
