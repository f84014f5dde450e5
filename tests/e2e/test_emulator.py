"""kopf and kubectl on the emulated API server: a throwaway ``Widget`` operator, end to end.

A Widget makes a ConfigMap (owned by it) and reports in its status; kubectl creates, watches,
patches, waits for, describes and deletes it; deletion goes through kopf's finalizer and cascades to
the ConfigMap by owner-reference garbage collection.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import kmock
import kopf
import kubernetes
import pytest
import yaml

from tests.kube.cluster import Cluster, eventually
from tests.kube.kubectl import columns
from tests.kube.kubelet import Kubelet, pod_terminated
from tests.kube.operator import new_registry, running_operator

WIDGET_CRD = {
    'apiVersion': 'apiextensions.k8s.io/v1', 'kind': 'CustomResourceDefinition',
    'metadata': {'name': 'widgets.test.dev'},
    'spec': {
        'group': 'test.dev', 'scope': 'Namespaced',
        'names': {'kind': 'Widget', 'plural': 'widgets', 'singular': 'widget', 'shortNames': ['wdg'],
                  'categories': ['gadgets']},
        'versions': [{
            'name': 'v1', 'served': True, 'storage': True,
            'subresources': {'status': {}},
            'additionalPrinterColumns': [
                {'name': 'Size', 'type': 'integer', 'jsonPath': '.spec.size'},
                {'name': 'Phase', 'type': 'string', 'jsonPath': '.status.phase'},
                {'name': 'ConfigMap', 'type': 'string', 'jsonPath': '.status.configMap'},
                {'name': 'Ready', 'type': 'string', 'jsonPath': '.status.conditions[?(@.type=="Ready")].status'},
                {'name': 'Age', 'type': 'date', 'jsonPath': '.metadata.creationTimestamp'},
            ],
            'schema': {'openAPIV3Schema': {
                'type': 'object',
                'properties': {
                    'spec': {'type': 'object', 'required': ['size'], 'properties': {
                        'size': {'type': 'integer', 'minimum': 1},
                        'colour': {'type': 'string', 'enum': ['red', 'blue'], 'default': 'red'},
                    }},
                    'status': {'type': 'object', 'properties': {
                        'phase': {'type': 'string'},
                        'configMap': {'type': 'string'},
                        'observedSize': {'type': 'integer'},
                        'conditions': {'type': 'array', 'items': {'type': 'object', 'properties': {
                            'type': {'type': 'string'}, 'status': {'type': 'string'},
                        }}},
                    }},
                },
            }},
        }],
    },
}
WIDGET = {'apiVersion': 'test.dev/v1', 'kind': 'Widget', 'metadata': {'name': 'w1'}, 'spec': {'size': 3}}


def widget_operator(deleted: list[str]) -> kopf.OperatorRegistry:
    """A throwaway operator: each Widget gets a ConfigMap (owned by it) and a status."""
    registry = new_registry()

    @kopf.on.create('test.dev', 'v1', 'widgets', id='create_configmap', registry=registry)
    def create_configmap(body: kopf.Body, spec: kopf.Spec, name: str, namespace: str | None,
                         patch: kopf.Patch, **_: Any) -> None:
        # A sync handler: kopf runs it in a thread, so the blocking kubernetes client is fine here.
        configmap = {'metadata': {'name': f'{name}-config'}, 'data': {'size': str(spec['size'])}}
        kopf.adopt(configmap, owner=body)
        kubernetes.client.CoreV1Api().create_namespaced_config_map(namespace, configmap)  # type: ignore[arg-type]
        patch.status['phase'] = 'Ready'
        patch.status['configMap'] = configmap['metadata']['name']
        patch.status['conditions'] = [{'type': 'Ready', 'status': 'True'}]

    @kopf.on.update('test.dev', 'v1', 'widgets', field='spec.size', registry=registry)
    async def resize(new: Any, patch: kopf.Patch, **_: Any) -> None:
        patch.status['observedSize'] = new
        patch.status['phase'] = 'Resized'

    @kopf.on.delete('test.dev', 'v1', 'widgets', registry=registry)
    async def forget(name: str, **_: Any) -> None:
        deleted.append(name)

    return registry


@pytest.fixture()
async def widgets(cluster: Cluster) -> Cluster:
    await cluster.kubectl('apply', '--validate=false', '-f', '-', input=yaml.safe_dump(WIDGET_CRD))
    await cluster.kubectl('wait', '--for=condition=Established', 'crd/widgets.test.dev', '--timeout=5s')
    return cluster


async def test_kopf_operator_end_to_end_through_kubectl(widgets: Cluster) -> None:
    cluster = widgets
    deleted: list[str] = []
    async with running_operator(widget_operator(deleted)):
        await cluster.kubectl('apply', '--validate=false', '-f', '-', input=yaml.safe_dump(WIDGET))

        # kopf's create handler made a ConfigMap owned by the widget and reported in the status.
        configmap = await cluster.wait_for('configmaps', 'w1-config')
        widget = cluster.get('widgets', 'w1')
        assert configmap is not None and widget is not None
        [owner] = configmap['metadata']['ownerReferences']
        assert (owner['kind'], owner['name'], owner['uid']) == ('Widget', 'w1', widget['metadata']['uid'])
        await cluster.kubectl('wait', '--for=condition=Ready', 'widget/w1', '--timeout=10s')
        widget = cluster.get('widgets', 'w1')
        assert widget is not None
        assert widget['status']['phase'] == 'Ready' and widget['spec']['colour'] == 'red'  # defaulted
        assert 'kopf.zalando.org/KopfFinalizerMarker' in widget['metadata']['finalizers']

        # The printer columns, from the CRD, through the server-side Table.
        _, out, _ = await cluster.kubectl('get', 'widgets')
        [row] = columns(out)
        assert {k: row[k] for k in ('NAME', 'SIZE', 'PHASE', 'CONFIGMAP', 'READY')} == {
            'NAME': 'w1', 'SIZE': '3', 'PHASE': 'Ready', 'CONFIGMAP': 'w1-config', 'READY': 'True'}

        # A watch shows the change of spec and kopf's on.field handler's status.
        async with cluster.kubectl_stream('get', 'widgets', '-w') as watch:
            await watch.wait_for_line(r'^w1\s+3\s+Ready')
            await cluster.kubectl('patch', 'widget', 'w1', '--type=merge', '-p', '{"spec": {"size": 5}}')
            await watch.wait_for_line(r'^w1\s+5\s+Resized\s+w1-config\s+True')
        widget = cluster.get('widgets', 'w1')
        assert widget is not None and widget['status']['observedSize'] == 5
        assert widget['metadata']['generation'] == 2

        # kopf posts its handlers' outcomes as Events, which describe shows.
        await eventually(lambda: cluster.list('events'), timeout_s=5)
        _, out, _ = await cluster.kubectl('describe', 'widget', 'w1')
        assert "Handler 'create_configmap' succeeded." in out

        # Deletion waits for kopf's finalizer, then cascades to the ConfigMap.
        await cluster.kubectl('delete', 'widget', 'w1', '--timeout=10s')
        assert deleted == ['w1']
        assert cluster.get('widgets', 'w1') is None
        assert cluster.get('configmaps', 'w1-config') is None
        _, out, _ = await cluster.kubectl('get', 'configmaps')
        assert 'w1-config' not in out


async def test_invalid_widget_is_rejected_with_422_naming_the_field(widgets: Cluster) -> None:
    bad = {**WIDGET, 'spec': {'size': 0, 'colour': 'green'}}
    rc, _, err = await widgets.kubectl('apply', '--validate=false', '-f', '-', input=yaml.safe_dump(bad),
                                       check=False)
    assert rc == 1
    assert 'The Widget "w1" is invalid' in err
    assert 'spec.size: Invalid value: 0: spec.size in body should be greater than or equal to 1' in err
    assert 'spec.colour: Unsupported value: "green": supported values: "red", "blue"' in err


async def test_status_subresource_split(widgets: Cluster) -> None:
    await widgets.kubectl('apply', '--validate=false', '-f', '-', input=yaml.safe_dump(WIDGET))
    # Main-resource writes ignore status; status writes ignore everything else.
    await widgets.kubectl('patch', 'widget', 'w1', '--type=merge', '-p',
                          '{"spec": {"size": 4}, "status": {"phase": "Hacked"}}')
    await widgets.kubectl('patch', 'widget', 'w1', '--subresource=status', '--type=merge', '-p',
                          '{"spec": {"size": 9}, "status": {"phase": "Reported"}}')
    widget = widgets.get('widgets', 'w1')
    assert widget is not None
    assert widget['spec']['size'] == 4 and widget['status'] == {'phase': 'Reported'}
    assert widget['metadata']['generation'] == 2  # spec changed once; status never bumps it


async def test_json_patch_test_failure_answers_422(widgets: Cluster) -> None:
    await widgets.kubectl('apply', '--validate=false', '-f', '-', input=yaml.safe_dump(WIDGET))
    rc, _, err = await widgets.kubectl('patch', 'widget', 'w1', '--type=json', '-p',
                                       '[{"op": "test", "path": "/spec/size", "value": 99}]', check=False)
    assert rc == 1 and 'The request is invalid' in err and 'is not equal to tested value 99' in err, err
    widget = widgets.get('widgets', 'w1')
    assert widget is not None and widget['spec']['size'] == 3


async def test_garbage_collection_cascades_through_owner_chain(cluster: Cluster) -> None:
    top = cluster.create('configmaps', {'metadata': {'name': 'top'}})
    middle = cluster.create('configmaps', {'metadata': {'name': 'middle', 'ownerReferences': [
        {'apiVersion': 'v1', 'kind': 'ConfigMap', 'name': 'top', 'uid': top['metadata']['uid']}]}})
    cluster.create('configmaps', {'metadata': {'name': 'bottom', 'ownerReferences': [
        {'apiVersion': 'v1', 'kind': 'ConfigMap', 'name': 'middle', 'uid': middle['metadata']['uid']}]}})
    cluster.create('configmaps', {'metadata': {'name': 'unrelated'}})
    await cluster.kubectl('delete', 'configmap', 'top')
    await eventually(lambda: [cm['metadata']['name'] for cm in cluster.list('configmaps')] == ['unrelated'])


async def test_label_selectors_and_builtin_tables(cluster: Cluster) -> None:
    for name, tier in [('a', 'web'), ('b', 'db'), ('c', 'web')]:
        cluster.create('pods', {'metadata': {'name': name, 'labels': {'tier': tier}},
                                'spec': {'containers': [{'name': 'main', 'image': 'busybox'}]}})
    _, out, _ = await cluster.kubectl('get', 'pods', '-l', 'tier=web')
    assert [row['NAME'] for row in columns(out)] == ['a', 'c']
    assert out.splitlines()[0].split() == ['NAME', 'READY', 'STATUS', 'RESTARTS', 'AGE']
    _, out, _ = await cluster.kubectl('get', 'pods', '-l', 'tier in (db),tier!=web', '-o', 'name')
    assert out.split() == ['pod/b']


POD = """
apiVersion: v1
kind: Pod
metadata: {name: server, labels: {app: demo}}
spec:
  containers: [{name: main, image: kinfer/model-server, ports: [{containerPort: 5000}]}]
---
apiVersion: v1
kind: Service
metadata: {name: server}
spec:
  type: NodePort
  selector: {app: demo}
  ports: [{port: 5000}]
"""


async def test_playing_the_kubelet(cluster: Cluster) -> None:
    started: list[str] = []

    async def start(pod: dict[str, Any]) -> str:
        started.append(pod['metadata']['name'])
        return kubelet.next_ip()

    kubelet = Kubelet(cluster.emulator, start=start)
    async with kubelet:
        await cluster.kubectl('apply', '-f', '-', input=POD)  # plain apply: server-side field validation
        await cluster.kubectl('wait', '--for=condition=Ready', 'pod/server', '--timeout=10s')
    pod = cluster.get('pods', 'server')
    assert pod is not None and started == ['server']
    assert (pod['status']['phase'], pod['status']['podIP'], pod['spec']['nodeName']) == (
        'Running', '127.0.0.2', 'emulated-node')
    _, out, _ = await cluster.kubectl('get', 'pods,services')
    assert 'pod/server   1/1     Running   0' in out
    service = cluster.get('services', 'server')
    assert service is not None and 30000 <= service['spec']['ports'][0]['nodePort'] <= 32767
    assert f"5000:{service['spec']['ports'][0]['nodePort']}/TCP" in out

    pod_terminated(cluster.emulator, 'server', exit_code=1)
    _, out, _ = await cluster.kubectl('get', 'pod', 'server', '--no-headers')
    assert out.split()[:3] == ['server', '0/1', 'Failed']


async def test_strict_field_validation_rejects_unknown_fields(widgets: Cluster) -> None:
    body = {**WIDGET, 'spec': {'size': 1, 'flavour': 'vanilla'}}
    rc, _, err = await widgets.kubectl('apply', '-f', '-', input=yaml.safe_dump(body), check=False)
    assert rc == 1 and 'strict decoding error: unknown field "spec.flavour"' in err, err
    # Without strict validation, the unknown field is pruned, as a real server does.
    await widgets.kubectl('apply', '--validate=false', '-f', '-', input=yaml.safe_dump(body))
    widget = widgets.get('widgets', 'w1')
    assert widget is not None and widget['spec'] == {'size': 1, 'colour': 'red'}


async def test_watch_honours_label_selector_and_resource_version(cluster: Cluster) -> None:
    cluster.create('configmaps', {'metadata': {'name': 'a', 'labels': {'x': '1'}}})
    since = cluster.emulator.resource_version
    url = f'{cluster.url}/api/v1/namespaces/default/configmaps'
    params = {'watch': 'true', 'labelSelector': 'x=1', 'resourceVersion': str(since), 'timeoutSeconds': '1'}
    async with aiohttp.ClientSession() as session, session.get(url, params=params) as response:
        assert response.headers['Content-Type'] == 'application/json'
        cluster.patch('configmaps', 'a', {'metadata': {'labels': {'x': '2'}}})  # leaves the selection
        cluster.patch('configmaps', 'a', {'metadata': {'labels': {'x': '1'}}})  # enters it again
        cluster.create('configmaps', {'metadata': {'name': 'b', 'labels': {'x': '3'}}})  # never in it
        cluster.delete('configmaps', 'a')
        events = [json.loads(line) async for line in response.content]
    assert [(e['type'], e['object']['metadata']['name'], int(e['object']['metadata']['resourceVersion']))
            for e in events] == [('DELETED', 'a', since + 1), ('ADDED', 'a', since + 2), ('DELETED', 'a', since + 4)]


async def test_kmock_reactions_inject_api_faults(cluster: Cluster) -> None:
    cluster.emulator['list', kmock.resource('v1/pods')][:1] << 503 << {'kind': 'Status', 'code': 503}
    rc, _, err = await cluster.kubectl('get', 'pods', check=False)
    assert rc == 1 and 'ServiceUnavailable' in err
    rc, _, err = await cluster.kubectl('get', 'pods')  # the reaction is used up: served normally again
    assert rc == 0 and 'No resources found' in err
