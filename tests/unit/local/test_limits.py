"""Local mode pins each replica to ceil(limits.cpu) cores and splits gpu.devices between replicas."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path
from typing import Any

import pytest

from kinfer.api import InferenceService, ManifestError, parse_resource
from kinfer.local.limits import cpu_cores, pinned_argv, server_limits
from kinfer.local.plan import build_plan


def _svc(**spec: Any) -> InferenceService:
    body: dict[str, Any] = {"model": {"name": "m", "format": "null"}, **spec}
    doc = {"apiVersion": "kinfer.dev/v1alpha1", "kind": "InferenceService", "metadata": {"name": "s"}, "spec": body}
    resource = parse_resource(doc)
    assert isinstance(resource, InferenceService)
    return resource


@pytest.mark.parametrize(("quantity", "cores"), [("500m", 0.5), ("0.2", 0.2), (1, 1.0), ("2", 2.0), (1.5, 1.5)])
def test_cpu_quantities_read_as_cores(quantity: Any, cores: float) -> None:
    assert cpu_cores(quantity) == pytest.approx(cores)


@pytest.mark.parametrize("quantity", ["1Gi", "abc", "0", "-1"])
def test_a_bad_cpu_quantity_is_bad_input(quantity: str) -> None:
    with pytest.raises(ManifestError, match=r"limits\.cpu"):
        cpu_cores(quantity)


def test_fractional_limits_round_up_and_replicas_get_distinct_cores() -> None:
    limits = server_limits(_svc(replicas=2, resources={"limits": {"cpu": "0.2"}}), [0, 1, 2, 3])
    assert [r.cores for r in limits.replicas] == [(0,), (1,)]
    assert limits.mechanism == "affinity" and limits.cpu_limit == pytest.approx(0.2)
    (note,) = limits.notes
    assert "CPU affinity" in note and "rounds a fractional limit up" in note and "0.2 -> 1" in note
    assert limits.describe() == {"cpu": 0.2, "mechanism": "affinity", "cores": [[0], [1]], "notes": [note]}


def test_replicas_share_cores_only_when_the_machine_has_too_few() -> None:
    limits = server_limits(_svc(replicas=4, resources={"limits": {"cpu": 1}}), [0, 1])
    assert [r.cores for r in limits.replicas] == [(0,), (1,), (0,), (1,)]
    assert "replicas share cores" in limits.notes[0]
    wide = server_limits(_svc(replicas=1, resources={"limits": {"cpu": 4}}), [0, 1])
    assert wide.replicas[0].cores == (0, 1) and "only 2 core(s) here" in wide.notes[0]


def test_without_a_cpu_limit_nothing_is_pinned() -> None:
    limits = server_limits(_svc(replicas=2), [0, 1])
    assert [r.cores for r in limits.replicas] == [None, None] and limits.notes == () and limits.describe() == {}
    assert [r.gpu_devices for r in limits.replicas] == ["", ""]  # no gpu: no GPU, as a pod without a request
    assert pinned_argv(["py", "-m", "kinfer.cli"], None) == ["py", "-m", "kinfer.cli"]


def test_gpu_devices_are_split_between_replicas_when_the_list_allows() -> None:
    split = server_limits(_svc(replicas=2, gpu={"devices": "0,1"}), [0])
    assert [r.gpu_devices for r in split.replicas] == ["0", "1"]
    assert split.notes == ("gpu.devices split between replicas: replica 0: CUDA_VISIBLE_DEVICES=0, "
                           "replica 1: CUDA_VISIBLE_DEVICES=1",)  # fmt: skip
    four = server_limits(_svc(replicas=2, gpu={"devices": "0,1,2,3"}), [0])
    assert [r.gpu_devices for r in four.replicas] == ["0,1", "2,3"]
    shared = server_limits(_svc(replicas=2, gpu={"devices": "0"}), [0])
    assert [r.gpu_devices for r in shared.replicas] == ["0", "0"] and "share" in shared.notes[0]


def test_the_plan_pins_each_replica_and_gives_it_its_own_devices() -> None:
    doc = _svc(replicas=2, resources={"limits": {"cpu": "500m"}}, gpu={"devices": "0,1"}).model_dump(
        by_alias=True, exclude_none=True
    )
    plan = build_plan([parse_resource(doc)], itertools.count(42000), lambda n: Path("/r") / n, None, Path("/"), [0, 1])
    (server,) = plan.servers
    assert [a[:5] for a in server.argv] == [
        (sys.executable, "-m", "kinfer.local.pin", "0", "--"),
        (sys.executable, "-m", "kinfer.local.pin", "1", "--"),
    ]
    assert server.argv[0][5:8] == (sys.executable, "-m", "kinfer.cli")
    assert [server.env_for(i)["CUDA_VISIBLE_DEVICES"] for i in (0, 1)] == ["0", "1"]
    assert any("CPU affinity" in n for n in plan.notes) and any("CUDA_VISIBLE_DEVICES=1" in n for n in plan.notes)
    assert not any("ignored locally: resources" in n for n in plan.notes)
