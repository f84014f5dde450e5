"""A Sweep on the real control plane: the CRD validates a Sweep strictly, a two-point sweep run by the
operator (as the chart's ServiceAccount) reaches Complete with the printer columns filled, and each
point's InferenceService is deleted, and its pods gone, before the next point's is created (the API
server's audit log of the operator's requests, and the objects sampled while it runs)."""

from __future__ import annotations

import datetime
from typing import Any

import yaml

from tests.cluster.live import OPERATOR_USER, LiveCluster, OperatorProcess, audit_events, running_operator
from tests.e2e.operator_harness import Kubelet, condition, dump, status_of
from tests.e2e.test_sweep import watch_points
from tests.kube.kubectl import columns

SWEEP: dict[str, Any] = {
    "apiVersion": "kinfer.dev/v1alpha1", "kind": "Sweep", "metadata": {"name": "pair"},
    "spec": {"service": {"model": {"name": "null", "format": "null"}, "service": {"type": "ClusterIP"}},
             "experiment": {"arrival": "uniform", "windowSize": 2, "schedule": [{"rps": 5, "duration": "2s"}],
                            "slo": {"p99Ms": 2000}},
             "matrix": [{"path": "service.workers", "values": [1, 2]}],
             "objective": "p99", "cooldown": "500ms"}}  # fmt: skip


async def test_a_sweep_is_validated_strictly_by_the_api_server(live: LiveCluster) -> None:
    await live.kubectl("apply", "--validate=strict", "--dry-run=server", "-f", "-", input=yaml.safe_dump(SWEEP))
    for change, needle in (({"matrx": []}, 'unknown field "spec.matrx"'),
                           ({"objective": "latency"}, "spec.objective"),
                           ({"matrix": [{"path": "model.workers", "values": [1]}]}, "spec.matrix[0].path")):
        bad = {**SWEEP, "spec": {**SWEEP["spec"], **change}}
        rc, _, err = await live.kubectl("apply", "--validate=strict", "--dry-run=server", "-f", "-",
                                        input=yaml.safe_dump(bad), check=False)
        assert rc != 0 and needle in err, err
    long = {**SWEEP, "metadata": {"name": "s" * 51}}
    rc, _, err = await live.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(long), check=False)
    assert rc != 0 and "at most 50 characters" in err, err


async def test_a_two_point_sweep_runs_one_point_at_a_time_to_complete(
    live: LiveCluster, kubelet: Kubelet, operator: OperatorProcess
) -> None:
    since = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    async with running_operator(operator), watch_points(live, "pair-p", live.namespace, 0.2) as seen:
        await live.kubectl("apply", "--validate=strict", "-f", "-", input=yaml.safe_dump(SWEEP))
        await live.kubectl("wait", "--for=condition=Complete", "--timeout=120s", "sweep/pair", timeout_s=130)
    status = status_of(live, "sweep", "pair")
    assert status["phase"] == "Succeeded" and (status["done"], status["total"]) == (2, 2), dump(status)
    rows = status["points"]
    assert [r["parameters"] for r in rows] == [{"service.workers": 1}, {"service.workers": 2}]
    assert all(r["phase"] == "Succeeded" and r["latencyMs"]["p99"] > 0 for r in rows), dump(rows)
    best = min(range(2), key=lambda i: rows[i]["latencyMs"]["p99"])
    assert status["best"]["index"] == best and condition(status, "Progressing")["status"] == "False"
    _, out, _ = await live.kubectl("get", "sweep", "pair")
    [row] = columns(out)
    assert (row["PHASE"], row["DONE"], row["TOTAL"]) == ("Succeeded", "2", "2") and row["AGE"], out
    assert float(row["BEST"]) == status["best"]["value"], out
    _, wide, _ = await live.kubectl("get", "sweep", "pair", "-o", "wide")
    assert columns(wide)[0]["OBJECTIVE"] == "p99" and "POINT" in wide, wide
    # Never two points at once: p0's service and pods were gone before p1's appeared.
    assert all(len(s) <= 1 for s in seen), [s for s in seen if len(s) > 1]
    names = [next(iter(s)) for s in seen if s]
    assert [n for i, n in enumerate(names) if i == 0 or names[i - 1] != n] == ["pair-p0", "pair-p1"]
    # The operator's own requests, as the API server recorded them.
    calls = [(e["requestReceivedTimestamp"], e["verb"], e["objectRef"].get("name"))
             for e in audit_events(live.plane, OPERATOR_USER, since)
             if (e.get("objectRef") or {}).get("resource") == "inferenceservices" and e["verb"] in ("create", "delete")
             and (e.get("responseStatus") or {}).get("code", 500) < 300]  # fmt: skip
    in_order = sorted(calls)
    assert [verb for _, verb, _ in in_order] == ["create", "delete", "create", "delete"], calls
    assert [name for _, verb, name in in_order if verb == "delete"] == ["pair-p0", "pair-p1"], calls
    assert live.list("inferenceservices") == []
    # The study is planned from the whole spec: it cannot change once it exists.
    rc, _, err = await live.kubectl("patch", "sweep", "pair", "--type=merge", "-p", '{"spec":{"cooldown":"1s"}}',
                                    check=False)
    assert rc != 0 and "a Sweep's spec cannot change once it exists" in err, err
