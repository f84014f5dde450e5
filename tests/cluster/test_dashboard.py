"""The target's resources in ``kubectl get lexp -o wide`` and ``kubectl kinfer dashboard`` on the real
control plane, through the real kubectl.

``kubectl port-forward`` needs a kubelet's streaming server, which this tier does not have (the test
kubelet only runs processes and writes pod status). So ``kubectl kinfer dashboard`` runs against the real
apiserver with the real kubectl for everything it looks up (the experiment, the Secret's token, the
generator pods) and for its errors, and ONLY its ``port-forward`` step goes through a ``$KUBECTL``
wrapper script that forwards a local port to the pod's (loopback) IP itself, as kubectl's would. Every
other argument list the wrapper receives is handed to the real kubectl unchanged.
"""

from __future__ import annotations

import asyncio
import base64
import re
import signal
import sys
from pathlib import Path

import aiohttp
import yaml

from tests.cluster.live import KUBECTL, LiveCluster, OperatorProcess, cluster_state, running_operator
from tests.cluster.test_loadexperiment import SERVER
from tests.e2e.operator_harness import Kubelet, dump, status_of
from tests.kube.cluster import eventually
from tests.kube.kubectl import columns

EXPERIMENT = {
    "apiVersion": "kinfer.dev/v1alpha1", "kind": "LoadExperiment", "metadata": {"name": "watched"},
    "spec": {"target": {"service": "target"}, "arrival": "uniform", "schedule": [{"rps": 10, "duration": "90s"}]},
}

#: ``$KUBECTL`` for the plugin: the real kubectl, except ``port-forward``, which this tier cannot serve.
WRAPPER = r'''#!{python}
"""kubectl, except port-forward: forwards 127.0.0.1:LOCAL to the pod's IP (this tier has no kubelet
streaming server). Logs each port-forward's arguments to {log}."""
import asyncio, os, subprocess, sys

REAL = {kubectl!r}
args = sys.argv[1:]
if "port-forward" not in args:
    os.execv(REAL, [REAL, *args])
with open({log!r}, "a") as f:
    f.write(" ".join(args) + "\n")
namespace = args[:args.index("port-forward")]
pod, ports = args[args.index("port-forward") + 1:][:2]
local, remote = ports.split(":")
ip = subprocess.run([REAL, *namespace, "get", pod, "-o", "jsonpath={{.status.podIP}}"], capture_output=True,
                    text=True, check=True).stdout.strip()


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


async def handle(reader, writer):
    print(f"Handling connection for {{remote}}", flush=True)
    up_reader, up_writer = await asyncio.open_connection(ip, int(remote))
    await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer), return_exceptions=True)


async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(local or 0))
    port = server.sockets[0].getsockname()[1]
    print(f"Forwarding from 127.0.0.1:{{port}} -> {{remote}}", flush=True)
    await server.serve_forever()

asyncio.run(main())
'''


def _env(live: LiveCluster, **extra: str) -> dict[str, str]:
    env = live.plane.env()
    return {**env, "PATH": f"{Path(sys.executable).parent}:{env['PATH']}", "COLUMNS": "160", **extra}


async def _plugin(live: LiveCluster, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        KUBECTL, "kinfer", *args, "-n", live.namespace, env=_env(live),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_get_lexp_wide_shows_the_targets_cpu_and_gpu_after_a_status_patch(live: LiveCluster) -> None:
    await live.kubectl("apply", "-f", "-", input=yaml.safe_dump(EXPERIMENT))
    live.patch("loadexperiments", "watched", {"status": {"phase": "Running", "live": {
        "t": 12.0, "realRPS": 10.0, "realQPS": 10.0, "p99Ms": 4.2, "serverCPU": 1.75, "serverMemoryMB": 812.5,
        "serverGPUUtil": 63.5, "serverGPUMemoryMB": 2048.0}}}, subresource="status")  # fmt: skip
    stored = status_of(live, "lexp", "watched")["live"]  # declared, so not pruned
    assert (stored["serverCPU"], stored["serverMemoryMB"], stored["serverGPUUtil"], stored["serverGPUMemoryMB"]) \
        == (1.75, 812.5, 63.5, 2048.0), dump(stored)

    _, out, _ = await live.kubectl("get", "lexp", "watched", "-o", "wide")
    print(out)
    [row] = columns(out)
    assert (row["CPU"], row["GPU(%)"], row["PHASE"], row["RPS"]) == ("1.75", "63.5", "Running", "10"), out
    _, narrow, _ = await live.kubectl("get", "lexp", "watched")
    assert "CPU" not in columns(narrow)[0] and "GPU(%)" not in columns(narrow)[0]  # priority 1: -o wide only

    # without a GPU the column is empty, not zero
    live.patch("loadexperiments", "watched", {"status": {"live": {"serverGPUUtil": None}}}, subresource="status")
    _, out, _ = await live.kubectl("get", "lexp", "watched", "-o", "wide")
    [row] = columns(out)
    assert (row["CPU"], row["GPU(%)"]) == ("1.75", ""), out


async def test_kubectl_kinfer_dashboard_forwards_to_a_running_generator_with_its_token(
    live: LiveCluster, kubelet: Kubelet, operator: OperatorProcess, tmp_path: Path
) -> None:
    rc, _, err = await _plugin(live, "dashboard", "nosuch")
    assert rc == 2 and "nosuch" in err and "not found" in err, err

    await live.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([SERVER, EXPERIMENT]))
    rc, _, err = await _plugin(live, "dashboard", "watched")  # no operator yet: no Job, no pod
    assert rc == 2 and "loadexperiment/watched has no running generator pod" in err, err

    log = tmp_path / "port-forward.log"
    wrapper = tmp_path / "kubectl-wrapper"
    wrapper.write_text(WRAPPER.format(python=sys.executable, kubectl=KUBECTL, log=str(log)))
    wrapper.chmod(0o755)
    async with running_operator(operator):
        await eventually(lambda: (status_of(live, "lexp", "watched").get("live") or {}).get("t"), timeout_s=90,
                         explain=lambda: cluster_state(live, operator, kubelet))
        [generator] = kubelet.running("watched-loadgen")
        secret = live.get("secrets", "watched-control")
        assert secret is not None
        token = base64.b64decode(secret["data"]["token"]).decode()

        # Started with SIGINT ignored, as a job of a non-interactive shell (CI) starts it: Ctrl-C must
        # still end it (the plugin handles SIGINT itself).
        proc = await asyncio.create_subprocess_exec(
            "/bin/sh", "-c", 'trap "" INT; exec "$@"', "sh",
            KUBECTL, "kinfer", "dashboard", "watched", "-n", live.namespace, env=_env(live, KUBECTL=str(wrapper)),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)  # fmt: skip
        assert proc.stdout is not None
        try:
            url = ""
            while not url:
                line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
                assert line, (await proc.stderr.read()).decode() if proc.stderr else "no output"  # type: ignore[union-attr]
                if match := re.match(r"(http://127\.0\.0\.1:\d+)/#token=(\S+)$", line.strip()):
                    url, shown = match.groups()
            print(f"dashboard at {url}/#token=...")
            assert shown == token  # the Secret's token, read with the real kubectl
            [forwarded] = log.read_text().splitlines()
            assert forwarded == f"--namespace {live.namespace} port-forward pod/{generator.name} :8089", forwarded

            async with aiohttp.ClientSession() as http:
                async with http.get(f"{url}/") as resp:
                    assert resp.status == 200 and "kinfer loadgen" in await resp.text()
                async with http.get(f"{url}/api/status") as resp:
                    assert (await resp.json())["phase"] == "Running"
                async with http.post(f"{url}/api/intensity", json={"rps": 25}) as resp:
                    assert resp.status == 401  # the generator still wants its token
                async with http.post(f"{url}/api/intensity", json={"rps": 25},
                                     headers={"Authorization": f"Bearer {token}"}) as resp:
                    assert resp.status == 200 and (await resp.json())["intensity"] == 25
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGINT)  # Ctrl-C
            try:
                code = await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()
                raise AssertionError("Ctrl-C did not end kubectl kinfer dashboard in 20 s") from None
        assert code == 0
        async with aiohttp.ClientSession() as http:  # the port-forward ended with it
            try:
                async with http.get(f"{url}/api/status", timeout=aiohttp.ClientTimeout(total=3)) as resp:
                    raise AssertionError(f"still forwarding after Ctrl-C: {resp.status}")
            except aiohttp.ClientConnectionError:
                pass
        await live.kubectl("delete", "lexp", "watched", "--timeout=60s", timeout_s=70)
        await live.kubectl("delete", "kisvc", "target", "--timeout=60s", timeout_s=70)
        await eventually(lambda: not live.list("pods"), timeout_s=60)
