"""``kubectl kinfer``: the kubectl plugin for LoadExperiments (no kopf; it shells out to ``kubectl``).

    kubectl kinfer intensity NAME RPS      set spec.intensity (RPS "schedule" or "-" removes it)
    kubectl kinfer top NAME [--once]       live table of the experiment's status
    kubectl kinfer report NAME [--output DIR]
                                           per-stage table, SLO verdict; with --output the results
                                           directory rebuilt from what the operator stored
    kubectl kinfer dashboard NAME [--port P]
                                           port-forward to a generator's live dashboard, print its URL

Going through the real ``kubectl`` keeps the user's kubeconfig, context and credentials exactly as
kubectl resolves them (``$KUBECONFIG``, exec plugins). Exit codes: 0 ok, 1 SLO not met (report),
2 bad input or unknown experiment.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from kinfer.api.loadexperiment import LoadExperimentSpec
from kinfer.controller.lexp_build import control_secret_name, job_name, secret_token
from kinfer.controller.meta import EXPERIMENT_LABEL

EXIT_OK, EXIT_SLO_FAILED, EXIT_BAD_INPUT = 0, 1, 2
RESOURCE = "loadexperiments.kinfer.dev"


class PluginError(Exception):
    """A message for stderr and an exit code."""

    def __init__(self, message: str, code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise PluginError(f"{self.prog}: {message}")


def kubectl_binary() -> str:
    """The kubectl to call (``$KUBECTL`` wins, else the one on PATH)."""
    found = os.environ.get("KUBECTL") or shutil.which("kubectl")
    if not found:
        raise PluginError("kubectl not found on PATH")
    return found


def kubectl(args: Sequence[str], namespace: str | None) -> str:
    """Run kubectl; its stdout, or a :class:`PluginError` with its message."""
    cmd = [kubectl_binary(), *(["--namespace", namespace] if namespace else []), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        err = proc.stderr.strip() or proc.stdout.strip()
        if "NotFound" in err or "not found" in err:
            raise PluginError(f"kubectl kinfer: {err.removeprefix('Error from server (NotFound): ')}")
        raise PluginError(f"kubectl kinfer: kubectl {' '.join(args[:2])} failed: {err}")
    return proc.stdout


def get_experiment(name: str, namespace: str | None) -> dict[str, Any]:
    """The LoadExperiment as JSON."""
    obj: dict[str, Any] = json.loads(kubectl(["get", RESOURCE, name, "-o", "json"], namespace))
    return obj


def parse_rps(raw: str) -> float | None:
    """A rate (>= 0), or ``None`` for "schedule"/"-"/"none" (remove the override)."""
    if raw.lower() in ("schedule", "-", "none", "null"):
        return None
    try:
        value = float(raw)
    except ValueError:
        raise PluginError(f"kubectl kinfer intensity: RPS must be a number or 'schedule', got {raw!r}") from None
    if not value >= 0 or value == float("inf"):
        raise PluginError(f"kubectl kinfer intensity: RPS must be >= 0, got {raw!r}")
    return int(value) if value.is_integer() else value


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _condition(status: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if c.get("type") == type_), None)


def top_table(obj: Mapping[str, Any]) -> Group:
    """The live view: phase, rates, latencies, window aggregates, current stage, the target's resources."""
    status = obj.get("status") or {}
    live = status.get("live") or {}
    stage = status.get("stage") or {}
    title = f"{obj['metadata']['name']}  phase={status.get('phase', 'Pending')}"
    if status.get("targetURL"):
        title += f"  target={status['targetURL']}"
    table = Table(title=title)
    for column in ("Target", "RPS", "QPS", "p50(ms)", "p99(ms)", "max(ms)", "Avg99th(ms)", "SR(%)", "Stage"):
        table.add_column(column, justify="right")
    table.add_row(
        _fmt(status.get("targetRPS")),
        _fmt(live.get("realRPS")),
        _fmt(live.get("realQPS")),
        _fmt(live.get("p50Ms")),
        _fmt(live.get("p99Ms")),
        _fmt(live.get("maxMs")),
        _fmt(status.get("avg99thMs")),
        _fmt(status.get("serviceRatePercent")),
        "-" if not stage else f"{stage.get('index')} @ {_fmt(stage.get('rps'))}",
    )
    totals = Table.grid(padding=(0, 2))
    totals.add_row(*(f"{k}={_fmt(status.get(k))}" for k in ("sent", "completed", "errors", "dropped")))
    return Group(table, server_table(live), totals)


#: The target's resources in the live record: (column, record field, digits).
SERVER_COLUMNS = (
    ("CPU (cores)", "serverCPU", 2),
    ("memory (MB)", "serverMemoryMB", 0),
    ("GPU (%)", "serverGPUUtil", 1),
    ("GPU memory (MB)", "serverGPUMemoryMB", 0),
)


def server_table(live: Mapping[str, Any]) -> Table:
    """The target's CPU, memory and GPU in the same record as the rates ("-": not measured, e.g. no GPU)."""
    table = Table(title="target's resources")
    for column, _, _ in SERVER_COLUMNS:
        table.add_column(column, justify="right")
    table.add_row(*(_fmt(_number(live.get(key)), digits) for _, key, digits in SERVER_COLUMNS))
    return table


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def stage_table(obj: Mapping[str, Any]) -> Table:
    """Per-stage summary: rate, counts, percentiles, service rate."""
    table = Table(title=f"{obj['metadata']['name']}: stages")
    for column in ("#", "RPS", "sent", "completed", "errors", "dropped", "p50", "p90", "p99", "p999", "max", "SR(%)"):
        table.add_column(column, justify="right")
    for stage in (obj.get("status") or {}).get("stages") or []:
        lat = stage.get("latencyMs") or {}
        sr = stage.get("serviceRate")
        table.add_row(
            str(stage.get("index")),
            _fmt(stage.get("rps")),
            *(_fmt(stage.get(k)) for k in ("sent", "completed", "errors", "dropped")),
            *(_fmt(lat.get(k)) for k in ("p50", "p90", "p99", "p999", "max")),
            "-" if sr is None else f"{sr * 100:.2f}",
        )
    return table


def report(obj: Mapping[str, Any], console: Console) -> int:
    """Print the report; exit code 1 when the SLO was not met."""
    status = obj.get("status") or {}
    console.print(stage_table(obj))
    slo = _condition(status, "SLOMet")
    phase = status.get("phase", "Pending")
    console.print(f"phase: {phase}")
    if slo is None:
        console.print("SLO: not judged yet" if phase not in ("Succeeded", "Failed", "Stopped") else "SLO: -")
    else:
        verdict = "MET" if slo.get("status") == "True" else "NOT MET"
        console.print(f"SLO: {verdict} ({slo.get('reason', '')}: {slo.get('message', '')})")
    results = status.get("results") or {}
    if results:
        where = []
        if results.get("configMap"):
            where.append(f"ConfigMap {results['configMap']} (summary.json)")
        if results.get("job"):
            where.append(f"Job {results['job']}, directory {results.get('path', '/results')} in its pod(s)")
        where.append(f"records stored in the cluster: kubectl kinfer report {obj['metadata']['name']} --output DIR")
        console.print("results: " + "; ".join(where))
    return EXIT_SLO_FAILED if slo is not None and slo.get("status") == "False" else EXIT_OK


# --- dashboard: a port-forward to a generator's control API ---------------------------------------

#: kubectl port-forward's line once it listens: ``Forwarding from 127.0.0.1:PORT -> REMOTE``.
FORWARDING = re.compile(r"Forwarding from 127\.0\.0\.1:(\d+) ->")


def control_token(name: str, namespace: str | None) -> str:
    """The token of the experiment's Secret ``<name>-control`` (the operator creates it with the Job)."""
    secret_name = control_secret_name(name)
    try:
        secret = json.loads(kubectl(["get", "secret", secret_name, "-o", "json"], namespace))
    except PluginError as exc:
        raise PluginError(f"kubectl kinfer dashboard: no control token for loadexperiment/{name}: {exc}") from None
    token = secret_token(secret)
    if not token:
        raise PluginError(f"kubectl kinfer dashboard: Secret {secret_name} holds no control token")
    return token


def running_generator(name: str, pods: Sequence[Mapping[str, Any]]) -> str | None:
    """A running generator pod of the experiment's Job (ready ones first, then by name), or ``None``."""
    job = job_name(name)
    candidates = []
    for pod in pods:
        meta, status = pod.get("metadata") or {}, pod.get("status") or {}
        owned = any(o.get("kind") == "Job" and o.get("name") == job for o in meta.get("ownerReferences") or [])
        if not owned or status.get("phase") != "Running" or meta.get("deletionTimestamp"):
            continue
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
        candidates.append((not ready, str(meta.get("name"))))
    return min(candidates)[1] if candidates else None


def share_note(spec: Mapping[str, Any]) -> str | None:
    """What one generator's dashboard shows when the experiment has several (``None`` with one)."""
    parallelism = int(spec.get("parallelism") or 1)
    if parallelism <= 1:
        return None
    return (
        f"note: one of {parallelism} generators, showing its share of the rate and its own results; a rate "
        "set there applies to it alone (kubectl kinfer intensity sets the whole experiment's)"
    )


def dashboard_url(port: int, token: str) -> str:
    """The local dashboard address; the token rides in the fragment, which the browser never sends."""
    return f"http://127.0.0.1:{port}/#token={token}"


def _drain(stream: Any, keep: list[str]) -> None:
    """Read a pipe to its end (a full pipe would stall kubectl), keeping the last lines."""
    for line in stream:
        keep.append(line)
        del keep[:-20]


def dashboard(name: str, namespace: str | None, port: int, console: Console) -> int:
    """Port-forward to a running generator of ``name`` and print the dashboard's URL; until Ctrl-C."""
    obj = get_experiment(name, namespace)  # a clear "not found" first
    remote = int((obj.get("spec") or {}).get("controlPort") or LoadExperimentSpec.model_fields["control_port"].default)
    pods = json.loads(kubectl(["get", "pods", "-l", f"{EXPERIMENT_LABEL}={name}", "-o", "json"], namespace))
    pod = running_generator(name, pods.get("items") or [])
    if pod is None:
        phase = (obj.get("status") or {}).get("phase", "Pending")
        raise PluginError(
            f"kubectl kinfer dashboard: loadexperiment/{name} has no running generator pod (phase {phase})"
        )
    token = control_token(name, namespace)
    cmd = [kubectl_binary(), *(["--namespace", namespace] if namespace else []), "port-forward",
           f"pod/{pod}", f"{port or ''}:{remote}"]  # fmt: skip
    # Ctrl-C and SIGTERM both end the forward and exit 0, also where the caller started this with SIGINT
    # ignored (a job of a non-interactive shell): an ignored Ctrl-C, or a SIGTERM that killed this process
    # at once, would leave the port-forward running behind it.
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return _forward(name, obj, pod, token, cmd, console)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _forward(name: str, obj: Mapping[str, Any], pod: str, token: str, cmd: list[str], console: Console) -> int:
    """Run ``kubectl port-forward`` (``cmd``), print the URL once it listens, and wait for it or Ctrl-C."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    errors: list[str] = []
    threading.Thread(target=_drain, args=(proc.stderr, errors), daemon=True).start()
    try:
        local = None
        for line in proc.stdout:
            if match := FORWARDING.search(line):
                local = int(match.group(1))
                break
        if local is None:
            proc.wait()
            raise PluginError(f"kubectl kinfer dashboard: kubectl port-forward failed: {''.join(errors).strip()}")
        threading.Thread(target=_drain, args=(proc.stdout, []), daemon=True).start()
        console.print(f"loadexperiment/{name}: dashboard of pod/{pod} (Ctrl-C stops the port-forward)")
        if note := share_note(obj.get("spec") or {}):
            console.print(note)
        print(dashboard_url(local, token), flush=True)
        code = proc.wait()
        raise PluginError(f"kubectl kinfer dashboard: the port-forward ended (exit {code}): {''.join(errors).strip()}")
    except KeyboardInterrupt:
        return EXIT_OK
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def report_command(name: str, namespace: str | None, output: str | None, console: Console) -> int:
    """``report``: the stage table and verdict; with ``--output`` first the results directory, rebuilt
    from the ConfigMaps the operator stored (:mod:`kinfer.plugin_report`)."""
    obj = get_experiment(name, namespace)
    if output is not None:
        from kinfer.plugin_report import NoResults, report_to_directory  # matplotlib only when writing

        def configmaps() -> list[dict[str, Any]]:
            found = json.loads(kubectl(["get", "configmap", "-l", f"kinfer.dev/experiment={name}", "-o", "json"],
                                      namespace))  # fmt: skip
            return list(found.get("items") or [])

        try:
            report_to_directory(name, Path(output), lambda: obj, configmaps, console.print)
        except NoResults as exc:
            raise PluginError(f"kubectl kinfer report: {exc}") from None
    return report(obj, console)


def build_parser() -> argparse.ArgumentParser:
    """``kubectl kinfer`` argument parser (``-n`` is accepted before or after the subcommand)."""
    common = _Parser(add_help=False)
    common.add_argument("-n", "--namespace", default=argparse.SUPPRESS, help="namespace of the experiment")
    parser = _Parser(prog="kubectl kinfer", description=__doc__.splitlines()[0], parents=[common])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("intensity", parents=[common], help="set (or remove) the live rate override")
    p.add_argument("name")
    p.add_argument("rps", help="requests/s, or 'schedule' to return to the schedule")
    p = sub.add_parser("top", parents=[common], help="live view of an experiment's status")
    p.add_argument("name")
    p.add_argument("--once", action="store_true", help="print once and exit")
    p.add_argument("--interval", type=float, default=1.0, help="refresh period, seconds")
    p = sub.add_parser("report", parents=[common], help="stage table, SLO verdict, results")
    p.add_argument("name")
    p.add_argument("--output", metavar="DIR", help="write the results directory (summary.json, records.csv, ...)")
    p = sub.add_parser("dashboard", parents=[common], help="port-forward to a generator's live dashboard")
    p.add_argument("name")
    p.add_argument("--port", type=_port, default=0, help="local port (default: any free one)")
    return parser


def _port(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a port number, got {raw!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port between 0 and 65535, got {value}")
    return value


def run(argv: Sequence[str], console: Console) -> int:
    """Execute one plugin command."""
    args = build_parser().parse_args(list(argv))
    namespace: str | None = getattr(args, "namespace", None)
    match args.command:
        case "intensity":
            rps = parse_rps(args.rps)
            get_experiment(args.name, namespace)  # a clear "not found" before patching
            patch = json.dumps({"spec": {"intensity": rps}})
            kubectl(["patch", RESOURCE, args.name, "--type", "merge", "-p", patch], namespace)
            shown = "the schedule" if rps is None else f"{rps} RPS"
            console.print(f"loadexperiment/{args.name}: intensity set to {shown}")
            return EXIT_OK
        case "top":
            if args.once:
                console.print(top_table(get_experiment(args.name, namespace)))
                return EXIT_OK
            with Live(top_table(get_experiment(args.name, namespace)), console=console) as live:
                while True:
                    time.sleep(max(0.1, args.interval))
                    obj = get_experiment(args.name, namespace)
                    live.update(top_table(obj))
                    if (obj.get("status") or {}).get("phase") in ("Succeeded", "Failed", "Stopped"):
                        return EXIT_OK
        case "report":
            return report_command(args.name, namespace, args.output, console)
        case "dashboard":
            return dashboard(args.name, namespace, args.port, console)
    raise PluginError(f"unknown command {args.command!r}")


def main(argv: list[str]) -> int:
    """Entry point of ``kubectl-kinfer``."""
    console = Console()
    try:
        return run(argv, console)
    except PluginError as exc:
        print(exc, file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return EXIT_OK
