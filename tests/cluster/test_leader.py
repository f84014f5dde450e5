"""Two operator processes with the chart's identity: one takes the Lease and acts, the other stands by;
the leader killed with SIGKILL is replaced once its claim runs out, and a clean stop hands over at once."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import requests
import yaml

from tests.cluster.conftest import free_port
from tests.cluster.live import OPERATOR_NAMESPACE, RELEASE, LiveCluster, OperatorProcess, running_operator
from tests.cluster.test_inferenceservice import null_service
from tests.e2e.operator_harness import Kubelet, status_of
from tests.kube.cluster import eventually


def holder(live: LiveCluster) -> str | None:
    lease = live.get("leases", RELEASE, OPERATOR_NAMESPACE) or {}
    return (lease.get("spec") or {}).get("holderIdentity")


def health(operator: OperatorProcess) -> dict[str, object]:
    response = requests.get(f"http://127.0.0.1:{operator.metrics_port}/healthz", timeout=2)
    result: dict[str, object] = response.json()
    return result


async def test_one_operator_acts_and_a_standby_takes_over(
    live: LiveCluster, kubelet: Kubelet, operator: OperatorProcess, tmp_path: Path
) -> None:
    second = OperatorProcess(operator.kubeconfig, live.namespace, tmp_path / "second.log", free_port(),
                             env=dict(operator.env))
    async with running_operator(operator):
        await eventually(lambda: health(operator)["status"] == "leading", timeout_s=20)
        async with running_operator(second):
            assert health(second)["status"] == "standing-by"
            assert operator.proc is not None and f"_{operator.proc.pid}_" in (holder(live) or "")
            await live.kubectl("apply", "-f", "-", input=yaml.safe_dump(null_service("led")))
            await live.kubectl("wait", "--for=condition=Ready", "kisvc/led", "--timeout=60s", timeout_s=70)
            assert "Handler" not in second.log.read_text(), second.tail()  # the standby did nothing

            await operator.kill(signal.SIGKILL)  # no clean hand-over: the claim must run out
            await eventually(lambda: health(second)["status"] == "leading", timeout_s=30)
            assert second.proc is not None and f"_{second.proc.pid}_" in (holder(live) or "")
            await live.kubectl("patch", "kisvc", "led", "--type=merge", "-p", '{"spec":{"replicas":2}}')
            await eventually(lambda: status_of(live, "kisvc", "led").get("readyReplicas") == 2, timeout_s=30)
        # second stopped cleanly: it gave the Lease up
        await eventually(lambda: not holder(live), timeout_s=10)
    await asyncio.sleep(0)
