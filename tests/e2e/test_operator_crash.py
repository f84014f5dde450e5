"""``kinfer operator`` (a real process) killed with SIGKILL inside its two crash windows, held there by
the emulated API server: right after it created the generator Job and before the first status write,
and in ``finish()`` while it writes the results. A restarted operator creates no second Job and loses
no summary."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.operator_harness import Kubelet, dump, install_crds, status_of
from tests.kube.cluster import Cluster, eventually

KINFER = str(Path(sys.executable).with_name("kinfer"))
SERVER = {"apiVersion": "kinfer.dev/v1alpha1", "kind": "InferenceService", "metadata": {"name": "target"},
          "spec": {"model": {"name": "null", "format": "null"}, "service": {"type": "ClusterIP"}}}


def experiment(name: str) -> dict[str, Any]:
    return {"apiVersion": "kinfer.dev/v1alpha1", "kind": "LoadExperiment", "metadata": {"name": name},
            "spec": {"target": {"service": "target"}, "arrival": "uniform", "windowSize": 2,
                     "schedule": [{"rps": 10, "duration": "4s"}], "slo": {"p99Ms": 1000}}}


class Operator:
    """``kinfer operator`` processes against the emulator, one at a time."""

    def __init__(self, cluster: Cluster, workdir: Path) -> None:
        self.env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "KINFER_OPERATOR_METRICS_PORT": "0",
                    "KINFER_OPERATOR_RESULTS_LINGER_S": "30"}
        self.log = workdir / "operator.log"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                KINFER, "operator", "--namespace", "default", env=self.env, stdout=out,
                stderr=asyncio.subprocess.STDOUT)

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await asyncio.wait_for(self.proc.wait(), 20)


@pytest.fixture()
async def operator(cluster: Cluster, tmp_path: Path) -> AsyncIterator[Operator]:
    running = Operator(cluster, tmp_path)
    try:
        yield running
    finally:
        await running.stop()


def hold(cluster: Cluster, method: str, path: str, body: dict[str, Any]) -> tuple[asyncio.Event, asyncio.Event]:
    """The first matching request gets no answer until ``release`` is set; ``arrived`` says it came."""
    arrived, release = asyncio.Event(), asyncio.Event()

    async def held(_: Any) -> dict[str, Any]:
        arrived.set()
        await release.wait()
        return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 503, "message": "held"}

    cluster.emulator[method, re.compile(path), body][:1] << 503 << held
    return arrived, release


async def kill_while_held(cluster: Cluster, operator: Operator, name: str, held: asyncio.Event,
                          release: asyncio.Event) -> None:
    """Start the operator, apply the target and experiment ``name``, wait until the operator's request is
    held by the API server, SIGKILL the operator there, then let the held request go."""
    await operator.start()
    await cluster.kubectl("apply", "--validate=false", "-f", "-", input=yaml.safe_dump_all([SERVER, experiment(name)]))
    await asyncio.wait_for(held.wait(), 60)
    await operator.kill()
    release.set()


async def test_sigkill_after_the_job_and_before_the_first_status_write(
    cluster: Cluster, tmp_path: Path, operator: Operator
) -> None:
    await install_crds(cluster)
    arrived, release = hold(cluster, "patch", r".*/loadexperiments/early/status$", {"status": {"phase": "Running"}})
    async with Kubelet(cluster, tmp_path):
        await kill_while_held(cluster, operator, "early", arrived, release)
        job = cluster.get("jobs", "early-loadgen")
        assert job is not None and status_of(cluster, "lexp", "early").get("phase") != "Running"
        await operator.start()
        await eventually(lambda: status_of(cluster, "lexp", "early").get("phase") == "Succeeded", timeout_s=60)
        jobs = cluster.list("jobs", "default")
        assert [(j["metadata"]["name"], j["metadata"]["uid"]) for j in jobs] == [
            ("early-loadgen", job["metadata"]["uid"])]
        summary = json.loads(cluster.get("configmaps", "early-results")["data"]["summary.json"])  # type: ignore[index]
        assert summary["sent"] > 0 and "incomplete" not in summary, dump(summary)


async def test_sigkill_while_finish_writes_the_results(cluster: Cluster, tmp_path: Path, operator: Operator) -> None:
    await install_crds(cluster)
    # The final summary is a patch of the results ConfigMap (created incomplete at the start).
    arrived, release = hold(cluster, "patch", r".*/configmaps/late-results$", {"data": {}})
    async with Kubelet(cluster, tmp_path):
        await kill_while_held(cluster, operator, "late", arrived, release)
        pending = json.loads(cluster.get("configmaps", "late-results")["data"]["summary.json"])  # type: ignore[index]
        assert pending["incomplete"] is True  # the final summary was not written
        await operator.start()
        # The generator still lingers with its final numbers: the new operator reads them.
        await eventually(lambda: status_of(cluster, "lexp", "late").get("phase") == "Succeeded", timeout_s=60)
        summary = json.loads(cluster.get("configmaps", "late-results")["data"]["summary.json"])  # type: ignore[index]
        assert "incomplete" not in summary, dump(summary)
        status = status_of(cluster, "lexp", "late")
        assert summary["sent"] == status["sent"] > 0 and summary["slo"]["met"] is True, dump(summary)
        assert len(cluster.list("jobs", "default")) == 1


async def test_a_final_summary_is_never_replaced_by_one_rebuilt_from_status(
    cluster: Cluster, tmp_path: Path, operator: Operator
) -> None:
    """Killed after the results were written but before the final status: the generator is gone when the
    operator comes back, so all it has is the last status; the summary it would rebuild from that must
    not replace the generator's own."""
    await install_crds(cluster)
    operator.env["KINFER_OPERATOR_RESULTS_LINGER_S"] = "2"
    arrived, release = hold(cluster, "patch", r".*/loadexperiments/kept/status$", {"status": {"phase": "Succeeded"}})
    async with Kubelet(cluster, tmp_path):
        await kill_while_held(cluster, operator, "kept", arrived, release)
        written = json.loads(cluster.get("configmaps", "kept-results")["data"]["summary.json"])  # type: ignore[index]
        assert "incomplete" not in written and written["sent"] > 0
        # The generator's linger runs out: the Job completes with nobody left to read.
        await eventually(lambda: (cluster.get("jobs", "kept-loadgen") or {}).get("status", {}).get("succeeded") == 1,
                         timeout_s=30)
        await operator.start()
        await eventually(lambda: status_of(cluster, "lexp", "kept").get("phase") == "Succeeded", timeout_s=30)
        after = json.loads(cluster.get("configmaps", "kept-results")["data"]["summary.json"])  # type: ignore[index]
        assert after == written, dump(after)
