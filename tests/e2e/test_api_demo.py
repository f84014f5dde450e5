"""kinfer's CRDs on the emulated API server, through the real kubectl: printer columns, short names,
the ``kinfer`` category, and schema validation answering 422 with the field named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.kube.cluster import Cluster
from tests.kube.kubectl import columns

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / 'crds'
EXAMPLE = ROOT / 'examples' / 'mobilenet.yaml'

pytestmark = pytest.mark.skipif(not (CRDS / 'inferenceservices.kinfer.dev.yaml').exists(),
                                reason='crds/ not generated yet (kinfer crds --write)')


async def install(cluster: Cluster) -> None:
    await cluster.kubectl('apply', '-f', str(CRDS))
    await cluster.kubectl('wait', '--for=condition=Established', '--timeout=10s',
                          'crd/inferenceservices.kinfer.dev', 'crd/loadexperiments.kinfer.dev')


async def test_example_is_accepted_and_listed_with_printer_columns(cluster: Cluster) -> None:
    await install(cluster)
    _, out, _ = await cluster.kubectl('apply', '-f', str(EXAMPLE))  # server-side (strict) field validation
    assert 'inferenceservice.kinfer.dev/mobilenet created' in out
    assert 'loadexperiment.kinfer.dev/mobilenet-load created' in out

    _, out, _ = await cluster.kubectl('get', 'kisvc')
    assert out.splitlines()[0].split() == ['NAME', 'READY', 'REPLICAS', 'WORKERS', 'ENDPOINT', 'PHASE', 'AGE']
    [row] = columns(out)
    assert row['NAME'] == 'mobilenet' and row['WORKERS'] == '8' and row['REPLICAS'] == '1'

    _, out, _ = await cluster.kubectl('get', 'lexp')
    assert out.splitlines()[0].split() == [
        'NAME', 'PHASE', 'TARGET', 'RPS', 'QPS', 'P99(MS)', 'AVG99TH(MS)', 'SR(%)', 'AGE']

    _, out, _ = await cluster.kubectl('get', 'kisvc,lexp')
    assert 'inferenceservice.kinfer.dev/mobilenet' in out and 'loadexperiment.kinfer.dev/mobilenet-load' in out

    _, out, _ = await cluster.kubectl('get', 'kinfer')  # the category
    assert 'inferenceservice.kinfer.dev/mobilenet' in out and 'loadexperiment.kinfer.dev/mobilenet-load' in out


async def test_status_shows_in_printer_columns(cluster: Cluster) -> None:
    await install(cluster)
    await cluster.kubectl('apply', '-f', str(EXAMPLE))
    await cluster.kubectl('patch', 'kisvc', 'mobilenet', '--subresource=status', '--type=merge', '-p',
                          '{"status": {"phase": "Ready", "readyReplicas": 1, "endpoint": "http://10.0.0.3:31500"}}')
    _, out, _ = await cluster.kubectl('get', 'kisvc', 'mobilenet')
    [row] = columns(out)
    assert (row['READY'], row['ENDPOINT'], row['PHASE']) == ('1', 'http://10.0.0.3:31500', 'Ready')


def _example(kind: str) -> dict[str, Any]:
    return next(doc for doc in yaml.safe_load_all(EXAMPLE.read_text()) if doc['kind'] == kind)


@pytest.mark.parametrize(('field', 'value', 'message'), [
    ('workers', 0, 'spec.workers: Invalid value: 0: spec.workers in body should be greater than or equal to 1'),
    ('workers', 'eight', 'spec.workers: Invalid value: "string": spec.workers in body must be of type integer'),
])
async def test_schema_violations_are_rejected_naming_the_field(
        cluster: Cluster, field: str, value: object, message: str) -> None:
    await install(cluster)
    body = _example('InferenceService')
    body['metadata']['name'] = 'bad'
    body['spec'][field] = value
    rc, _, err = await cluster.kubectl('apply', '--validate=false', '-f', '-', input=yaml.safe_dump(body),
                                       check=False)
    assert rc == 1
    assert 'is invalid' in err and message in err, err
    assert cluster.get('kisvc', 'bad') is None


@pytest.mark.parametrize(('kind', 'path', 'value', 'message'), [
    ('InferenceService', ('model', 'format'), 'pytorch',
     'spec.model.format: Unsupported value: "pytorch": supported values:'),
    ('LoadExperiment', ('arrival',), 'gaussian', 'spec.arrival: Unsupported value: "gaussian": supported values:'),
])
async def test_unknown_enum_value_is_rejected(
        cluster: Cluster, kind: str, path: tuple[str, ...], value: str, message: str) -> None:
    await install(cluster)
    body = _example(kind)
    body['metadata']['name'] = 'bad'
    parent = body['spec']
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    rc, _, err = await cluster.kubectl('apply', '-f', '-', input=yaml.safe_dump(body), check=False)
    assert rc == 1
    assert f'The {kind} "bad" is invalid' in err and message in err, err


async def test_unknown_field_is_rejected_by_strict_validation(cluster: Cluster) -> None:
    await install(cluster)
    body = _example('InferenceService')
    body['spec']['gpus'] = 2
    rc, _, err = await cluster.kubectl('apply', '-f', '-', input=yaml.safe_dump(body), check=False)
    assert rc == 1 and 'strict decoding error: unknown field "spec.gpus"' in err, err
