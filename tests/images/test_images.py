"""The three images, run: entry points, what is installed, the model server serving a tiny model as a
non-root user on a read-only root filesystem, the load generator against it, the operator against the
emulated API server. (GPU: ``make images-gpu`` is not part of this tier; see images/model-server/Dockerfile.)
"""

from __future__ import annotations

import asyncio
import json
import re
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.images.conftest import (
    EXTRAS,
    NAMES,
    ROOT,
    RUN_FLAGS,
    UID,
    VERSION,
    Container,
    build_sh,
    free_port,
    head_revision,
    http_get,
    http_post,
    podman_run,
    wait_http,
)
from tests.kube.cluster import eventually, run_cluster

# Building the images from a fresh cache happens in the first test's setup (images fixture).
pytestmark = pytest.mark.timeout(1800)

PYPROJECT_EXTRAS: dict[str, list[str]] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
    "optional-dependencies"]
COMMAND = {"operator": "operator", "model-server": "serve", "loadgen": "loadgen"}


@pytest.mark.parametrize("name", NAMES)
def test_entrypoint_help(podman: str, images: dict[str, str], name: str) -> None:
    result = podman_run(podman, "run", "--rm", *RUN_FLAGS, images[name], "--help", timeout_s=120)
    assert result.stdout.startswith(f"usage: kinfer {COMMAND[name]}"), result.stdout + result.stderr


@pytest.mark.parametrize("name", NAMES)
def test_image_metadata_user_and_no_build_tools(podman: str, images: dict[str, str], name: str) -> None:
    [meta] = json.loads(podman_run(podman, "image", "inspect", images[name]).stdout)
    config = meta["Config"]
    assert config["User"] == f"{UID}:{UID}"
    assert config["Entrypoint"] == ["kinfer", COMMAND[name]]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == VERSION
    assert labels["org.opencontainers.image.revision"] == head_revision()
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert labels["org.opencontainers.image.source"].startswith("https://")
    assert meta["Healthcheck"]["Test"][0] == "CMD"  # docker format: an OCI image would have dropped it
    assert not any(e.startswith("DEBIAN_FRONTEND=") for e in config["Env"])
    # no compiler, no build virtualenv, no pip cache, no TensorFlow headers
    probe = ("for c in gcc cc c++ make; do command -v $c; done; ls -d /opt/build /root/.cache "
             "/opt/kinfer/lib/python3*/site-packages/tensorflow/include 2>/dev/null; id -u; true")
    result = podman_run(podman, "run", "--rm", *RUN_FLAGS, "--user", "0", "--entrypoint", "sh", images[name],
                        "-c", probe)
    assert result.stdout.split() == ["0"], result.stdout


#: Run inside an image: installed distributions, and the closure of kinfer's requirements for EXTRAS
#: (markers evaluated with pip's vendored packaging; the images have no other copy).
CLOSURE = r"""
import json, re, sys
from importlib import metadata
from pip._vendor.packaging.requirements import Requirement
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
installed = {norm(d.metadata["Name"]) for d in metadata.distributions()}
closure, direct, missing, seen = set(), set(), set(), set()
todo = [("kinfer", tuple(sys.argv[1].split(",")), True)]
while todo:
    name, extras, top = todo.pop()
    if (name, extras) in seen:
        continue
    seen.add((name, extras))
    for raw in metadata.requires(name) or []:
        req = Requirement(raw)
        if req.marker and not any(req.marker.evaluate({"extra": e}) for e in extras or ("",)):
            continue
        dep = norm(req.name)
        if dep == "kinfer":
            todo.append(("kinfer", tuple(sorted(req.extras)), True))
            continue
        if top:
            direct.add(dep)
        if dep not in installed:
            missing.add(dep)
            continue
        closure.add(dep)
        todo.append((dep, tuple(sorted(req.extras)), False))
print(json.dumps({k: sorted(v) for k, v in
                  dict(installed=installed, closure=closure, direct=direct, missing=missing).items()}))
"""


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _dists(extra: str) -> set[str]:
    """Distributions an extra of pyproject.toml names directly, following ``kinfer[...]``."""
    out: set[str] = set()
    for req in PYPROJECT_EXTRAS[extra]:
        inner = re.fullmatch(r"kinfer\[([^\]]+)\]", req.strip())
        if inner:
            out = out.union(*(_dists(e.strip()) for e in inner.group(1).split(",")))
        else:
            out.add(_norm(re.split(r"[<>=!;\[ ]", req, maxsplit=1)[0]))
    return out


def _other_parts_libraries(name: str) -> set[str]:
    """What the other images' extras name directly and this one's do not (kopf for the server, ...)."""
    own = set().union(*(_dists(e) for e in EXTRAS[name]))
    return set().union(*(_dists(e) for n in NAMES if n != name for e in EXTRAS[n])) - own


@pytest.mark.parametrize("name", NAMES)
def test_installed_distributions_are_exactly_the_image_extras(podman: str, images: dict[str, str], name: str) -> None:
    result = podman_run(podman, "run", "--rm", *RUN_FLAGS, "--entrypoint", "python", images[name],
                        "-c", CLOSURE, ",".join(EXTRAS[name]))
    found = json.loads(result.stdout)
    installed, closure = set(found["installed"]), set(found["closure"])
    assert found["missing"] == []
    # nothing beyond what the extras pull in (the virtualenv's own pip and setuptools aside)
    assert installed - closure - {"kinfer", "pip", "setuptools"} == set()
    # and in particular none of the other parts' libraries that this part's do not need
    foreign = _other_parts_libraries(name) - closure
    assert foreign and not foreign & installed, foreign & installed
    expected_absent = {"operator": {"flask", "gunicorn", "tensorflow-cpu", "onnxruntime", "matplotlib"},
                       "model-server": {"kopf", "kubernetes", "aiohttp", "matplotlib", "plotly"},
                       "loadgen": {"tensorflow-cpu", "onnxruntime", "flask", "kopf", "kubernetes"}}[name]
    assert not expected_absent & installed
    assert set(found["direct"]) <= installed


# --- the model server, serving a tiny model as uid 10001 on a read-only root filesystem ---------------

SERVER_FLAGS = ("--read-only", "--read-only-tmpfs=false", "--tmpfs", "/tmp:rw,size=64m,mode=1777", "--cap-drop", "ALL",
                "--security-opt", "no-new-privileges")


@pytest.fixture(scope="module")
def served(podman: str, images: dict[str, str], tiny_model: Path) -> Iterator[tuple[str, Container, Path]]:
    """The model-server image serving the tiny model (ONNX Runtime, two workers) on a free port."""
    port = free_port()
    name = f"kinfer-test-server-{port}"
    podman_run(podman, "run", "-d", "--name", name, *RUN_FLAGS, *SERVER_FLAGS, "-v", f"{tiny_model}:/model:ro",
        "-e", "KINFER_SERVE_HOST=127.0.0.1", "-e", f"KINFER_SERVE_PORT={port}",
        images["model-server"], "--model", "/model", "--workers", "2")
    ctr = Container(podman, name)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/v2/health/ready", ctr, timeout_s=120)
        yield base, ctr, tiny_model
    finally:
        podman_run(podman, "rm", "-f", "-t", "0", name, check=False)


def test_model_server_serves_the_tiny_model_read_only_as_non_root(
    podman: str, served: tuple[str, Container, Path]
) -> None:
    base, ctr, model = served
    status, _, _ = http_get(f"{base}/v2/health/ready")
    assert status == 200
    status, body, _ = http_get(f"{base}/gpu")
    assert (status, body) == (200, b"ok")
    status, answer, _ = http_post(f"{base}/predict?threshold=0", next((model / "dataset").glob("*.jpg")).read_bytes())
    assert status == 200, answer[:300]
    body_json = json.loads(answer)
    assert body_json["weights"] == "random" and len(body_json["detections"]) == 100
    _, metrics, _ = http_get(f"{base}/metrics")
    text = metrics.decode()
    for stage in ("preprocess", "infer", "postprocess"):
        assert re.search(rf'kinfer_server_stage_duration_seconds_bucket\{{[^}}]*stage="{stage}"', text), stage
    # the processes run as 10001 and nothing can be written outside /tmp
    ps = podman_run(podman, "top", ctr.name, "user", "args").stdout
    assert all(line.split()[0] in ("10001", "kinfer") for line in ps.splitlines()[1:]), ps
    write = podman_run(podman, "exec", ctr.name, "sh", "-c", "touch /opt/kinfer/x /model/x 2>&1; id -u", check=False)
    assert write.stdout.count("Read-only file system") == 2 and write.stdout.split()[-1] == str(UID), write.stdout
    check = ctr.healthcheck()
    assert check.returncode == 0, check.stdout + check.stderr


def test_model_server_image_runs_tensorflow_too(
    podman: str, images: dict[str, str], tiny_model: Path, container: Callable[..., Container]
) -> None:
    port = free_port()
    ctr = container(images["model-server"], "--model", "/model", "--format", "tf-graphdef",
                    flags=(*SERVER_FLAGS, "-v", f"{tiny_model}:/model:ro",
                           "-e", "KINFER_SERVE_HOST=127.0.0.1", "-e", f"KINFER_SERVE_PORT={port}"))
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/v2/health/ready", ctr, timeout_s=120)
    status, body, _ = http_get(f"{base}/gpu")
    assert (status, body) == (200, b"ok")
    status, meta, _ = http_get(f"{base}/v2/models/ssd-mobilenet")
    assert status == 200 and json.loads(meta)["platform"] == "tf-graphdef", meta
    jpeg = next((tiny_model / "dataset").glob("*.jpg")).read_bytes()
    status, body, _ = http_post(f"{base}/predict?threshold=0", jpeg)
    assert status == 200 and len(json.loads(body)["detections"]) == 100, body[:300]


def test_loadgen_runs_a_schedule_against_the_server(
    podman: str, images: dict[str, str], served: tuple[str, Container, Path], tmp_path: Path,
    container: Callable[..., Container],
) -> None:
    base, _, model = served
    results = tmp_path / "results"
    results.mkdir()
    results.chmod(0o777)
    schedule = tmp_path / "schedule.yaml"
    schedule.write_text(yaml.safe_dump([{"rps": 10, "duration": "2s"}, {"rampTo": 30, "duration": "2s"}]))
    schedule.chmod(0o644)
    # the control port as a variable, as the image's HEALTHCHECK reads it; --linger keeps the API up a while;
    # uniform arrivals: the schedule's 60 requests (a Poisson count falls below 50 in 8 % of runs)
    ctr = container(images["loadgen"], f"{base}/predict", "--schedule", "/schedule/schedule.yaml",
                    "--arrival", "uniform", "--method", "POST", "--payload", "dataset:/data",
                    "--control-host", "127.0.0.1", "--quiet", "--linger", "3",
                    flags=("--read-only", "-v", f"{results}:/results", "-v", f"{schedule}:/schedule/schedule.yaml:ro",
                           "-v", f"{model / 'dataset'}:/data:ro", "-e", f"KINFER_LOADGEN_CONTROL_PORT={free_port()}"))
    while (check := ctr.healthcheck()).returncode != 0:  # healthy while it runs (polled until it has exited)
        assert ctr.running(), f"never healthy: {check.stdout} {check.stderr}\n{ctr.logs()[-4000:]}"
    assert ctr.wait(timeout_s=90) == 0, ctr.logs()
    summary = json.loads((results / "summary.json").read_text())
    assert summary["phase"] == "Succeeded", summary
    assert summary["errors"] == 0 and summary["dropped"] == 0, summary["errorsByClass"]
    assert summary["sent"] == summary["completed"] and 50 <= summary["sent"] <= 120, summary["sent"]
    assert summary["serverTimingMs"], "the server's Server-Timing stages reached the generator"
    assert {p.name for p in results.iterdir()} >= {"summary.json", "records.csv", "report.html", "latency.png"}
    assert all(p.stat().st_uid == UID for p in results.iterdir())


# --- the operator against the emulated API server (tests/kube) ----------------------------------------


async def test_operator_answers_healthz_and_reconciles_against_the_api_server(
    podman: str, images: dict[str, str], tmp_path: Path
) -> None:
    from tests.e2e.operator_harness import install_crds

    async with run_cluster(tmp_path) as cluster:
        await install_crds(cluster)
        kubeconfig = tmp_path / "kube" / "config"
        kubeconfig.parent.mkdir()
        kubeconfig.write_text(cluster.kubeconfig.read_text())
        kubeconfig.parent.chmod(0o755)
        kubeconfig.chmod(0o644)
        port = free_port()
        name = f"kinfer-test-operator-{port}"
        await asyncio.to_thread(
            podman_run, podman, "run", "-d", "--name", name, *RUN_FLAGS, "--read-only",
            "-v", f"{kubeconfig.parent}:/kube:ro", "-e", "KUBECONFIG=/kube/config",
            "-e", f"KINFER_OPERATOR_METRICS_PORT={port}", "-e", "KINFER_OPERATOR_METRICS_HOST=127.0.0.1",
            images["operator"],
        )  # fmt: skip
        ctr = Container(podman, name)
        try:
            body = await asyncio.to_thread(wait_http, f"http://127.0.0.1:{port}/healthz", ctr, 60)
            health = json.loads(body)  # 200: healthy ("status" says its leadership state, e.g. standalone)
            assert "status" in health and "problems" not in health, health
            isvc: dict[str, Any] = {
                "apiVersion": "kinfer.dev/v1alpha1", "kind": "InferenceService", "metadata": {"name": "m"},
                "spec": {"model": {"name": "null", "format": "null"}, "replicas": 1, "workers": 1,
                         "service": {"type": "ClusterIP"}},
            }  # fmt: skip
            await cluster.kubectl("apply", "--validate=false", "-f", "-", input=yaml.safe_dump(isvc))

            def pod_created() -> list[dict[str, Any]]:
                return cluster.list("pods", "default", "kinfer.dev/service=m")

            [pod] = await eventually(pod_created, timeout_s=60)
            [server] = pod["spec"]["containers"]
            assert server["image"] == images["model-server"]  # the operator's default: the tag make images built
            check = await asyncio.to_thread(ctr.healthcheck)
            assert check.returncode == 0, check.stdout + check.stderr
        finally:
            logs = await asyncio.to_thread(ctr.logs)
            await asyncio.to_thread(podman_run, podman, "rm", "-f", "-t", "0", name, check=False)
        assert "Traceback" not in logs, logs[-4000:]


# --- the operator image on the real control plane (make kube-up), as the chart's ServiceAccount ---------


async def test_operator_image_leads_and_builds_restricted_pods_on_the_real_control_plane(
    podman: str, images: dict[str, str], control_plane: Any, tmp_path: Path
) -> None:
    from tests.cluster.live import KUBECTL, OPERATOR_NAMESPACE, RELEASE, LiveCluster, restricted_namespace
    from tests.kube.kubectl import Kubectl

    (tmp_path / "cache").mkdir()
    cluster = LiveCluster(control_plane, Kubectl(control_plane.kubeconfig, tmp_path / "cache", binary=KUBECTL))
    cluster.namespace = restricted_namespace(cluster, "kinfer-img")
    (tmp_path / "kube").mkdir()
    kubeconfig = control_plane.service_account_kubeconfig(tmp_path / "kube" / "config")  # the chart's identity
    kubeconfig.chmod(0o644)  # readable by the image's user
    kubeconfig.parent.chmod(0o755)
    port = free_port()
    name = f"kinfer-test-operator-real-{port}"
    await asyncio.to_thread(
        podman_run, podman, "run", "-d", "--name", name, *RUN_FLAGS, "--read-only",
        "-v", f"{kubeconfig.parent}:/kube:ro", "-e", "KUBECONFIG=/kube/config",
        "-e", f"KINFER_OPERATOR_METRICS_PORT={port}", "-e", "KINFER_OPERATOR_METRICS_HOST=127.0.0.1",
        "-e", f"KINFER_OPERATOR_LEASE_NAMESPACE={OPERATOR_NAMESPACE}", "-e", f"KINFER_OPERATOR_LEASE_NAME={RELEASE}",
        "-e", "KINFER_OPERATOR_LEASE_S=6", images["operator"], "--namespace", cluster.namespace,
    )  # fmt: skip
    ctr = Container(podman, name)
    try:
        def leading() -> bool:
            try:
                status, body, _ = http_get(f"http://127.0.0.1:{port}/healthz")
            except OSError:  # not listening yet
                return False
            return status == 200 and json.loads(body).get("status") == "leading"

        await eventually(lambda: asyncio.to_thread(leading), timeout_s=60, interval=0.5)
        isvc = {"apiVersion": "kinfer.dev/v1alpha1", "kind": "InferenceService", "metadata": {"name": "m"},
                "spec": {"model": {"name": "null", "format": "null"}, "service": {"type": "ClusterIP"}}}
        await cluster.kubectl("apply", "-n", cluster.namespace, "-f", "-", input=yaml.safe_dump(isvc))
        # Admitted under `restricted` in the namespace, with the image make images built.
        [pod] = await eventually(lambda: cluster.list("pods", label_selector="kinfer.dev/service=m"), timeout_s=60)
        assert pod["spec"]["containers"][0]["image"] == images["model-server"]
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    finally:
        logs = await asyncio.to_thread(ctr.logs)
        await asyncio.to_thread(podman_run, podman, "rm", "-f", "-t", "10", name, check=False)
        for obj in cluster.list("inferenceservices"):
            cluster.patch("inferenceservices", obj["metadata"]["name"], {"metadata": {"finalizers": None}})
        for pod in cluster.list("pods"):
            cluster.delete("pods", pod["metadata"]["name"], grace_period_s=0)
        cluster.delete("namespaces", cluster.namespace, namespace=None)
    assert "Traceback" not in logs, logs[-4000:]


# --- room, tags and push --------------------------------------------------------------------------------


def test_a_build_without_room_stops_before_building_and_says_so() -> None:
    result = build_sh("images", MIN_FREE_GB="1000000")
    assert result.returncode == 1
    assert "a build needs 1000000 GB (MIN_FREE_GB)" in result.stderr and "image prune" in result.stderr
    assert "building" not in result.stderr


def test_registry_prefix_names_the_tags_and_push_needs_a_registry() -> None:
    tags = build_sh("tags", REGISTRY="registry.example.com/team/")
    assert tags.returncode == 0, tags.stderr
    assert tags.stdout.split() == [f"registry.example.com/team/kinfer/{n}:{VERSION}" for n in NAMES]
    push = build_sh("push")
    assert push.returncode == 2 and "set REGISTRY" in push.stderr
