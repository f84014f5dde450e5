"""An emulated Kubernetes API server for end-to-end tests: kmock's emulator, made real enough.

:class:`KubeEmulator` serves what kopf, the ``kubernetes`` client and the real ``kubectl`` need:
discovery (builtins loaded from kmock's bundle, CRDs registered when created), an in-memory store
with uids, resourceVersions, generations and timestamps, list/watch with label and field selectors,
create/replace/patch (merge, JSON, strategic merge) with the status subresource split, deletion with
finalizers and owner-reference garbage collection, CRD schema defaulting/pruning/validation (422 with
the field named) and server-side Tables built from printer columns for ``kubectl get [-w]``.

The objects live in kmock's ``objects`` array (with their history), so tests can assert on them;
the ``get_object``/``create_object``/``patch_object``/``delete_object`` methods go through the same
admission as HTTP requests (for playing controllers and the kubelet).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import copy
import datetime
import functools
import gzip
import importlib.resources
import json
import logging
import random
import re
import string
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import aiohttp.web
import attrs
import kmock
import yaml
from kmock._internal import enums, rendering

from tests.kube import errors, patching, schemas, selectors, tables
from tests.kube.errors import ApiError

logger = logging.getLogger(__name__)

Obj = dict[str, Any]
Key = tuple[kmock.resource, str | None, str]

CRDS = kmock.resource('apiextensions.k8s.io', 'v1', 'customresourcedefinitions')
NAMESPACES = kmock.resource('', 'v1', 'namespaces')
ALL_VERBS = ['create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch']
SERVER_VERSION = {
    'major': '1', 'minor': '32', 'gitVersion': 'v1.32.0-kinfer-emulator', 'gitCommit': '0' * 40,
    'gitTreeState': 'clean', 'buildDate': '2025-01-01T00:00:00Z', 'goVersion': 'go1.23.4',
    'compiler': 'gc', 'platform': 'linux/amd64',
}
BOOKMARK_INTERVAL = 30.0  # seconds between BOOKMARK events on idle watches that allow them


@functools.cache
def _bundled_resources() -> bytes:
    return gzip.decompress(importlib.resources.files('kmock._internal').joinpath('resources.json.gz').read_bytes())


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%dT%H:%M:%SZ')


def _version_priority(version: str) -> tuple[int, int, int]:
    """Kubernetes version ordering: v2 > v1 > v1beta2 > v1beta1 > v1alpha1 > anything else."""
    match = re.fullmatch(r'v(\d+)(?:(alpha|beta)(\d+))?', version)
    if match is None:
        return (-1, 0, 0)
    major, stage, minor = match.groups()
    return (int(major) if not stage else 0, {'alpha': 1, 'beta': 2}.get(stage or '', 3), int(minor or 0))


@attrs.frozen
class Route:
    """A parsed API path. ``plural is None`` means a discovery document."""

    group: str | None = None  # None: not under /api or /apis
    version: str | None = None
    plural: str | None = None
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None

    @classmethod
    def parse(cls, path: str) -> Route:
        parts = [part for part in path.split('/') if part]
        if parts[:1] == ['api']:
            group, rest = '', parts[1:]
        elif parts[:1] == ['apis'] and len(parts) >= 2:
            group, rest = parts[1], parts[2:]
        elif parts == ['apis']:
            return cls(group='*')
        else:
            return cls()
        if not rest:
            return cls(group=group)
        version, rest = rest[0], rest[1:]
        namespace = None
        namespace_itself = group == '' and (len(rest) <= 2 or (len(rest) == 3 and rest[2] in ('status', 'finalize')))
        if rest[:1] == ['namespaces'] and len(rest) >= 3 and not namespace_itself:
            namespace, rest = rest[1], rest[2:]
        if not rest:
            return cls(group=group, version=version)
        return cls(
            group=group, version=version, plural=rest[0], namespace=namespace,
            name=rest[1] if len(rest) > 1 else None, subresource='/'.join(rest[2:]) or None,
        )


@attrs.define
class CustomResource:
    """What the server knows about one served version of a CRD."""

    crd_name: str
    kind: str
    list_kind: str
    schema: schemas.Schema
    printer_columns: list[dict[str, Any]]
    status_subresource: bool


@attrs.define
class WatchEvent:
    rv: int
    type: str
    resource: kmock.resource
    object: Obj
    old: Obj | None


@attrs.define(kw_only=True)
class KubeEmulator(kmock.KubernetesEmulator):
    """A kmock ``KubernetesEmulator`` that behaves like a real API server for kopf and kubectl."""

    _revision: int = attrs.field(default=0, init=False)
    _events: list[WatchEvent] = attrs.field(factory=list, init=False)
    _event_rvs: list[int] = attrs.field(factory=list, init=False)
    _tick: asyncio.Event = attrs.field(factory=asyncio.Event, init=False)
    _stopping: bool = attrs.field(default=False, init=False)
    _custom: dict[kmock.resource, CustomResource] = attrs.field(factory=dict, init=False)
    _next_ip: int = attrs.field(default=1, init=False)
    _next_node_port: int = attrs.field(default=30000, init=False)

    # ------------------------------------------------------------------ HTTP entry points

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        route = Route.parse(raw_request.path)
        if route.group is None and raw_request.path not in ('/version',) and not raw_request.path.startswith(
                '/openapi'):
            return await super().__call__(raw_request)  # kmock's own DSL for anything not the API
        body = await raw_request.read()
        request = self._make_request(raw_request, route, body)
        self._requests.append(request)
        try:
            user_response = await self._try_user_reactions(request)
            if user_response is not None:
                return user_response
            return await self._serve(request, route)
        except ApiError as exc:
            return aiohttp.web.json_response(exc.status(), status=exc.code)
        except Exception as exc:  # an emulator bug: answer 500 like kmock does, keep it for assertions
            logger.exception('The emulator failed on %s %s', raw_request.method, raw_request.path_qs)
            if self._errors:
                self._errors[-1].append(exc)
            return await self._render_error(exc)

    def _make_request(self, raw: aiohttp.web.BaseRequest, route: Route, body: bytes) -> rendering.Request:
        text = body.decode('utf-8', errors='replace')
        data: Any = None
        if body:
            try:
                data = json.loads(text)
            except ValueError:
                with contextlib.suppress(yaml.YAMLError):
                    data = yaml.safe_load(text)
        resource = None if route.plural is None or route.group in (None, '*') else kmock.resource(
            route.group, route.version, route.plural)
        method = raw.method.upper()
        watching = raw.query.get('watch') in ('true', '1')
        action = (
            None if resource is None else
            enums.action.WATCH if method == 'GET' and watching else
            enums.action.LIST if method == 'GET' and route.name is None else
            enums.action.FETCH if method == 'GET' else
            enums.action.CREATE if method == 'POST' and route.name is None else
            enums.action.UPDATE if method in ('PATCH', 'PUT') else
            enums.action.DELETE if method == 'DELETE' else None
        )
        return rendering.Request(
            id=len(self._requests), raw_request=raw, url=raw.url, method=method,
            params=dict(raw.query), headers=dict(raw.headers), cookies=dict(raw.cookies),
            body=body, text=text, data=data, action=action, resource=resource,
            namespace=route.namespace, name=route.name, subresource=route.subresource,
        )

    async def _try_user_reactions(self, request: rendering.Request) -> aiohttp.web.StreamResponse | None:
        """Serve the request by a test's own kmock reaction (``emulator['list pods'] << 500``), if any."""
        for payload in sorted(self._payloads, key=lambda p: tuple(-x for x in p.priorities)):
            if any(priority == float('-inf') for priority in payload.priorities):
                continue  # kmock's fallbacks: the emulator serves these itself
            if request in payload._source and not payload._disabled.is_set():
                try:
                    return await payload(request)
                except rendering.ReactionMismatchError:
                    payload._disabled.set()
                except NotImplementedError:
                    pass
        return None

    async def _serve(self, request: rendering.Request, route: Route) -> aiohttp.web.StreamResponse:
        path = request.url.path
        if path == '/version':
            return aiohttp.web.json_response(SERVER_VERSION)
        if path.startswith('/openapi/v3'):
            return aiohttp.web.json_response(self._openapi_v3(path.removeprefix('/openapi/v3').strip('/')))
        if path.startswith('/openapi'):
            raise errors.no_such_resource()
        if route.plural is None:
            if request.method != 'GET':
                raise ApiError(405, 'MethodNotAllowed', 'the server does not allow this method')
            return aiohttp.web.json_response(self._discovery(route))
        resource = kmock.resource(route.group, route.version, route.plural)
        if resource not in self._resources:
            raise errors.no_such_resource()
        info = self._resources[resource]
        if bool(info.namespaced) != (route.namespace is not None) and (
                route.name is not None or request.method not in ('GET', 'DELETE')):
            raise errors.no_such_resource()
        if route.subresource not in (None, 'status') and not (route.subresource == 'log' and route.plural == 'pods'):
            raise errors.no_such_resource()
        if route.subresource == 'status' and 'status' not in info.subresources:
            raise errors.no_such_resource()  # e.g. a CRD version without `subresources: {status: {}}`

        method = request.method
        params = request.params
        strict = params.get('fieldValidation') == 'Strict'
        if method == 'GET' and params.get('watch') in ('true', '1'):
            return await self._serve_watch_stream(request, resource, route)
        if method == 'GET' and route.name is None:
            return self._respond(request, resource, self._list(resource, route.namespace, params), listing=True)
        if method == 'GET' and route.subresource == 'log':
            self._get(resource, route.namespace, route.name or '')
            return aiohttp.web.Response(text='', content_type='text/plain')
        if method == 'GET':
            return self._respond(request, resource, self._get(resource, route.namespace, route.name or ''))
        if method == 'POST' and route.name is None:
            obj = self._create(resource, route.namespace, self._body(request), dry_run='dryRun' in params,
                               strict=strict)
            return self._respond(request, resource, obj, status=201)
        if method == 'PUT' and route.name is not None:
            obj = self._replace(resource, route.namespace, route.name, self._body(request), route.subresource,
                                dry_run='dryRun' in params, strict=strict)
            return self._respond(request, resource, obj)
        if method == 'PATCH' and route.name is not None:
            content_type = request.headers.get('Content-Type', '').split(';')[0].strip()
            obj = self._patch(resource, route.namespace, route.name, request.data, content_type,
                              route.subresource, dry_run='dryRun' in params, strict=strict)
            return self._respond(request, resource, obj)
        if method == 'DELETE' and route.name is not None:
            options = request.data if isinstance(request.data, dict) else {}
            policy = options.get('propagationPolicy') or params.get('propagationPolicy') or 'Background'
            obj = self._delete(resource, route.namespace, route.name, policy=policy,
                               preconditions=options.get('preconditions'), dry_run='dryRun' in params)
            return self._respond(request, resource, obj)
        if method == 'DELETE':
            deleted = [self._delete(resource, item['metadata'].get('namespace'), item['metadata']['name'])
                       for item in self._list(resource, route.namespace, params)['items']]
            return self._respond(request, resource, self._list_body(resource, deleted), listing=True)
        raise ApiError(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource')

    def _body(self, request: rendering.Request) -> Obj:
        content_type = request.headers.get('Content-Type', '')
        if 'protobuf' in content_type:
            raise ApiError(415, 'UnsupportedMediaType',
                           'the emulator speaks JSON only: use `--dry-run=client -o yaml | kubectl apply -f -`')
        if not isinstance(request.data, dict):
            raise errors.bad_request('the request body must be a JSON object')
        return request.data

    def _respond(self, request: rendering.Request, resource: kmock.resource, body: Obj, *,
                 status: int = 200, listing: bool = False) -> aiohttp.web.Response:
        if tables.wants_table(request.headers.get('Accept')):
            items = body['items'] if listing else [body]
            body = self._table(resource, items, request.params.get('includeObject', 'Metadata'))
        return aiohttp.web.json_response(body, status=status)

    def _table(self, resource: kmock.resource, items: list[Obj], include_object: str) -> Obj:
        custom = self._custom.get(resource)
        if custom is not None:
            columns, row = tables.crd_columns(custom.printer_columns)
        else:
            columns, row = tables.builtin_columns(resource.plural or '')
        return tables.make_table(columns, row, items, resource_version=str(self._revision),
                                 include_object=include_object)

    # ------------------------------------------------------------------ discovery

    def _discovery(self, route: Route) -> Obj:
        resources = self._registered()
        if route.group == '' and route.version is None:
            return {'kind': 'APIVersions', 'versions': ['v1'], 'serverAddressByClientCIDRs': [
                {'clientCIDR': '0.0.0.0/0', 'serverAddress': f'{self.url.host}:{self.url.port}'}]}
        if route.group == '*':
            groups = sorted({r.group for r in resources if r.group})
            return {'kind': 'APIGroupList', 'apiVersion': 'v1', 'groups': [self._group(g) for g in groups]}
        if route.version is None:
            if not any(r.group == route.group for r in resources) or not route.group:
                raise errors.no_such_resource()
            return {'kind': 'APIGroup', 'apiVersion': 'v1', **self._group(route.group or '')}
        served = [r for r in resources if r.group == route.group and r.version == route.version]
        if not served:
            raise errors.no_such_resource()
        entries = []
        for res in sorted(served, key=lambda r: r.plural or ''):
            info = self._resources[res]
            entry: Obj = {
                'name': res.plural, 'singularName': info.singular or (info.kind or '').lower(),
                'namespaced': bool(info.namespaced), 'kind': info.kind,
                'verbs': sorted(info.verbs) or ALL_VERBS,
            }
            if info.shortnames:
                entry['shortNames'] = sorted(info.shortnames)
            if info.categories:
                entry['categories'] = sorted(info.categories)
            entries.append(entry)
            for sub in sorted(info.subresources):
                entries.append({
                    'name': f'{res.plural}/{sub}', 'singularName': '', 'namespaced': bool(info.namespaced),
                    'kind': info.kind, 'verbs': ['get', 'patch', 'update'] if sub == 'status' else ['get'],
                })
        group_version = route.version if route.group == '' else f'{route.group}/{route.version}'
        return {'kind': 'APIResourceList', 'apiVersion': 'v1', 'groupVersion': group_version,
                'resources': entries}

    def _openapi_v3(self, group_version: str) -> Obj:
        """Just enough OpenAPI v3 for kubectl to know that PATCH takes ``fieldValidation`` (server-side
        validation, so plain ``kubectl apply`` works without ``--validate=false``); no schemas."""
        by_gv: dict[str, list[kmock.resource]] = {}
        for res in self._registered():
            gv = f'api/{res.version}' if not res.group else f'apis/{res.group}/{res.version}'
            by_gv.setdefault(gv, []).append(res)
        if not group_version:
            return {'paths': {
                gv: {'serverRelativeURL': f'/openapi/v3/{gv}?hash='
                                          + format(abs(hash(tuple(sorted(str(r) for r in served)))), 'X')}
                for gv, served in sorted(by_gv.items())
            }}
        if group_version not in by_gv:
            raise errors.no_such_resource()
        paths: Obj = {}
        for res in by_gv[group_version]:
            info = self._resources[res]
            where = f'/{group_version}/namespaces/{{namespace}}' if info.namespaced else f'/{group_version}'
            media = [patching.JSON_PATCH, patching.MERGE_PATCH, patching.APPLY_PATCH]
            paths[f'{where}/{res.plural}/{{name}}'] = {'patch': {
                'operationId': f'patch{info.kind}',
                'x-kubernetes-action': 'patch',
                'x-kubernetes-group-version-kind': {'group': res.group, 'version': res.version, 'kind': info.kind},
                'parameters': [
                    {'name': name, 'in': 'query', 'schema': {'type': 'string', 'uniqueItems': True}}
                    for name in ('dryRun', 'fieldManager', 'fieldValidation')
                ],
                'requestBody': {'content': {m: {'schema': {'type': 'object'}} for m in media}},
                'responses': {'200': {'description': 'OK'}},
            }}
        return {'openapi': '3.0.0', 'info': {'title': 'Kubernetes', 'version': SERVER_VERSION['gitVersion']},
                'paths': paths, 'components': {'schemas': {}}}

    def _registered(self) -> list[kmock.resource]:
        return [res for res in self._resources if isinstance(res, kmock.resource)]

    def _group(self, group: str) -> Obj:
        versions = sorted({r.version or '' for r in self._registered() if r.group == group},
                          key=_version_priority, reverse=True)
        listed = [{'groupVersion': f'{group}/{v}', 'version': v} for v in versions]
        return {'name': group, 'versions': listed, 'preferredVersion': listed[0]}

    # ------------------------------------------------------------------ resolving and reading

    def resolve(self, resource: str | kmock.resource) -> kmock.resource:
        """A registered resource from ``kmock.resource``, ``'v1/pods'``, ``'pods'``, ``'po'``, ``'Pod'``..."""
        parsed = resource if isinstance(resource, kmock.resource) else kmock.resource(resource)
        if parsed.group is not None and parsed.version is not None and parsed in self._resources:
            return parsed
        name = (parsed.plural or str(resource)).lower()
        candidates = [
            res for res in self._registered()
            if (parsed.group is None or res.group == parsed.group)
            and name in {res.plural, self._resources[res].singular, (self._resources[res].kind or '').lower(),
                         *self._resources[res].shortnames}
        ]
        if not candidates:
            raise KeyError(f'unknown resource: {resource!r}')
        # Prefer the core group, then the preferred (highest) version.
        candidates.sort(key=lambda r: (r.group != '', tuple(-x for x in _version_priority(r.version or ''))))
        return candidates[0]

    def _current(self, key: Key) -> Obj | None:
        if key not in self._objects:
            return None
        obj = self._objects[key]
        return None if obj.deleted else obj.raw

    def _meta_of(self, resource: kmock.resource) -> tuple[str, str]:
        info = self._resources[resource]
        api_version = resource.version if not resource.group else f'{resource.group}/{resource.version}'
        return api_version or 'v1', info.kind or (resource.plural or '').capitalize()

    def _get(self, resource: kmock.resource, namespace: str | None, name: str) -> Obj:
        obj = self._current((resource, namespace, name))
        if obj is None:
            raise errors.not_found(resource.plural or '', resource.group or '', name)
        return copy.deepcopy(obj)

    def _items(self, resource: kmock.resource, namespace: str | None = None) -> list[Obj]:
        found = [
            obj.raw for (res, ns, _), obj in self._objects.items()
            if res == resource and not obj.deleted and (namespace is None or ns == namespace)
        ]
        return sorted(found, key=lambda o: (o['metadata'].get('namespace') or '', o['metadata']['name']))

    def _list(self, resource: kmock.resource, namespace: str | None, params: Mapping[str, str]) -> Obj:
        try:
            by_labels = selectors.parse_label_selector(params.get('labelSelector'))
            by_fields = selectors.parse_field_selector(params.get('fieldSelector'))
        except selectors.SelectorError as exc:
            raise errors.bad_request(str(exc)) from exc
        items = [copy.deepcopy(o) for o in self._items(resource, namespace) if by_labels(o) and by_fields(o)]
        return self._list_body(resource, items)

    def _list_body(self, resource: kmock.resource, items: list[Obj]) -> Obj:
        api_version, kind = self._meta_of(resource)
        custom = self._custom.get(resource)
        return {
            'kind': custom.list_kind if custom else f'{kind}List', 'apiVersion': api_version,
            'metadata': {'resourceVersion': str(self._revision)}, 'items': items,
        }

    # ------------------------------------------------------------------ writing

    def _store(self, resource: kmock.resource, obj: Obj, event: str, old: Obj | None) -> Obj:
        """Persist a new state (or the removal, for DELETED) with a fresh resourceVersion; notify watches."""
        self._revision += 1
        obj['metadata']['resourceVersion'] = str(self._revision)
        key = (resource, obj['metadata'].get('namespace'), obj['metadata']['name'])
        if event == 'DELETED':
            self._objects[key].history.append(copy.deepcopy(obj))
            self._objects[key].delete()
        elif key not in self._objects:
            self._objects[key] = copy.deepcopy(obj)
        elif self._objects[key].deleted:
            self._objects[key].create(copy.deepcopy(obj))
        else:
            self._objects[key].history.append(copy.deepcopy(obj))
        self._events.append(WatchEvent(self._revision, event, resource, copy.deepcopy(obj), old))
        self._event_rvs.append(self._revision)
        self._tick.set()
        self._tick = asyncio.Event()
        return copy.deepcopy(obj)

    def _create(self, resource: kmock.resource, namespace: str | None, body: Obj, *,
                dry_run: bool = False, strict: bool = False) -> Obj:
        info = self._resources[resource]
        obj = copy.deepcopy(body)
        meta = obj.setdefault('metadata', {})
        if not isinstance(meta, dict):
            raise errors.bad_request('metadata must be an object')
        api_version, kind = self._meta_of(resource)
        obj['apiVersion'], obj['kind'] = api_version, kind
        if info.namespaced:
            if meta.get('namespace') not in (None, '', namespace):
                raise errors.bad_request('the namespace of the provided object does not match the namespace '
                                         'sent on the request')
            meta['namespace'] = namespace
            if self._current((NAMESPACES, None, namespace or '')) is None:
                raise errors.not_found('namespaces', '', namespace or '')
        else:
            meta.pop('namespace', None)
        if not meta.get('name'):
            if not meta.get('generateName'):
                raise errors.invalid(kind, resource.group or '', '', [
                    ('metadata.name', 'FieldValueRequired', 'metadata.name: Required value: name or '
                                                            'generateName is required')])
            alphabet = string.ascii_lowercase + string.digits
            meta['name'] = meta['generateName'] + ''.join(random.choices(alphabet, k=5))
        name = meta['name']
        if self._current((resource, meta.get('namespace'), name)) is not None:
            raise errors.already_exists(resource.plural or '', resource.group or '', name)
        for server_field in ('resourceVersion', 'deletionTimestamp', 'deletionGracePeriodSeconds', 'managedFields'):
            meta.pop(server_field, None)
        meta['uid'] = str(uuid.uuid4())
        meta['creationTimestamp'] = now_rfc3339()
        meta['generation'] = 1
        if 'status' in info.subresources:
            obj.pop('status', None)
        self._default_builtin(resource, obj)
        self._admit(resource, obj, strict=strict)
        if resource == CRDS:
            self._accept_crd(obj)
        if dry_run:
            return obj
        stored = self._store(resource, obj, 'ADDED', None)
        if resource == CRDS:
            self._register_crd(stored)
        return stored

    def _default_builtin(self, resource: kmock.resource, obj: Obj) -> None:
        """What builtin controllers and defaulting fill in right away (status, IPs, node ports)."""
        spec = obj.setdefault('spec', {}) if resource.plural in ('pods', 'services', 'jobs') else None
        if resource == NAMESPACES:
            obj['metadata'].setdefault('labels', {})['kubernetes.io/metadata.name'] = obj['metadata']['name']
            obj['status'] = {'phase': 'Active'}
        elif resource.group == '' and resource.plural == 'pods':
            obj['status'] = {'phase': 'Pending', 'qosClass': 'BestEffort'}
        elif resource.group == '' and resource.plural == 'services' and spec is not None:
            spec.setdefault('type', 'ClusterIP')
            if spec.get('clusterIP') != 'None':
                spec['clusterIP'] = spec.get('clusterIP') or f'10.96.{self._next_ip // 250}.{self._next_ip % 250 + 1}'
                spec['clusterIPs'] = [spec['clusterIP']]
                self._next_ip += 1
            used = {p.get('nodePort') for svc in self._items(resource) for p in svc['spec'].get('ports') or []}
            for port in spec.get('ports') or []:
                port.setdefault('protocol', 'TCP')
                port.setdefault('targetPort', port.get('port'))
                if spec['type'] in ('NodePort', 'LoadBalancer'):
                    if port.get('nodePort') in used:
                        raise errors.invalid('Service', '', obj['metadata']['name'], [(
                            'spec.ports[0].nodePort', 'FieldValueInvalid',
                            f'spec.ports[0].nodePort: Invalid value: {port["nodePort"]}: provided port is '
                            f'already allocated')])
                    if not port.get('nodePort'):
                        while self._next_node_port in used:
                            self._next_node_port += 1
                        port['nodePort'] = self._next_node_port
                        used.add(self._next_node_port)
            obj['status'] = {'loadBalancer': {}}
        elif resource.group == 'batch' and resource.plural == 'jobs' and spec is not None:
            spec.setdefault('completions', 1)
            spec.setdefault('parallelism', 1)
            spec.setdefault('backoffLimit', 6)
            obj['status'] = {}

    def _admit(self, resource: kmock.resource, obj: Obj, *, strict: bool = False) -> None:
        """Default, prune and validate a custom resource against its CRD's schema (422 if invalid).

        With ``strict`` (``?fieldValidation=Strict``, kubectl's default), unknown fields answer 400.
        """
        custom = self._custom.get(resource)
        if custom is None:
            return
        causes, unknown = custom.schema.admit(obj)
        if strict and unknown:
            raise errors.bad_request(
                f'{custom.kind} in version "{resource.version}" cannot be handled as a {custom.kind}: '
                f'strict decoding error: ' + ', '.join(f'unknown field "{field}"' for field in unknown))
        if causes:
            raise errors.invalid(custom.kind, resource.group or '', obj['metadata'].get('name', ''), causes)

    def _update(self, resource: kmock.resource, old: Obj, new: Obj, subresource: str | None, *,
                dry_run: bool = False, strict: bool = False) -> Obj:
        """Store ``new`` as the next state of ``old``: server-owned fields kept, status split, no-ops skipped."""
        info = self._resources[resource]
        if not isinstance(new.get('metadata'), dict):
            new['metadata'] = {}
        old_meta, meta = old['metadata'], new['metadata']
        has_status = 'status' in info.subresources
        if subresource == 'status':
            new = {**copy.deepcopy(old), 'status': new.get('status')}
            if new['status'] is None:
                del new['status']
            meta = new['metadata']
        elif has_status:
            new.pop('status', None)
            if 'status' in old:
                new['status'] = copy.deepcopy(old['status'])
        for field in ('name', 'namespace', 'uid', 'creationTimestamp', 'generation', 'deletionTimestamp',
                      'deletionGracePeriodSeconds', 'resourceVersion'):
            if field in old_meta:
                meta[field] = old_meta[field]
            else:
                meta.pop(field, None)
        new['apiVersion'], new['kind'] = old['apiVersion'], old['kind']
        if old_meta.get('deletionTimestamp'):
            added = set(meta.get('finalizers') or []) - set(old_meta.get('finalizers') or [])
            if added:
                raise errors.invalid(old['kind'], resource.group or '', old_meta['name'], [(
                    'metadata.finalizers', 'FieldValueForbidden',
                    f'metadata.finalizers: Forbidden: no new finalizers can be added if the object is being '
                    f'deleted, found new finalizers {sorted(added)!r}')])
        self._admit(resource, new, strict=strict)
        if resource == CRDS:
            self._accept_crd(new)
        if new == old:
            return copy.deepcopy(old)  # a no-op: no new resourceVersion, no event
        excluded = {'metadata', 'status'} if has_status or resource not in self._custom else {'metadata'}
        if {k: v for k, v in new.items() if k not in excluded} != {k: v for k, v in old.items() if k not in excluded}:
            meta['generation'] = int(old_meta.get('generation', 1)) + 1
        if dry_run:
            return new
        if old_meta.get('deletionTimestamp') and not meta.get('finalizers'):
            return self._remove(resource, new, old)
        stored = self._store(resource, new, 'MODIFIED', old)
        if resource == CRDS:
            self._register_crd(stored)
        return stored

    def _replace(self, resource: kmock.resource, namespace: str | None, name: str, body: Obj,
                 subresource: str | None, *, dry_run: bool = False, strict: bool = False) -> Obj:
        old = self._get(resource, namespace, name)
        wanted_rv = (body.get('metadata') or {}).get('resourceVersion')
        if wanted_rv and wanted_rv != old['metadata']['resourceVersion']:
            raise errors.conflict(resource.plural or '', resource.group or '', name,
                                  'the object has been modified; please apply your changes to the latest '
                                  'version and try again')
        return self._update(resource, old, copy.deepcopy(body), subresource, dry_run=dry_run, strict=strict)

    def _patch(self, resource: kmock.resource, namespace: str | None, name: str, patch: Any,
               content_type: str, subresource: str | None, *, dry_run: bool = False, strict: bool = False) -> Obj:
        if content_type == patching.APPLY_PATCH:
            if self._current((resource, namespace, name)) is None:
                body = copy.deepcopy(patch) if isinstance(patch, dict) else {}
                body.setdefault('metadata', {})['name'] = name
                return self._create(resource, namespace, body, dry_run=dry_run, strict=strict)
            content_type = patching.MERGE_PATCH
        old = self._get(resource, namespace, name)
        try:
            if isinstance(patch, list):
                new = patching.json_patch(old, patch)
            elif not isinstance(patch, dict):
                raise errors.bad_request('the patch must be a JSON object or a JSON-patch list')
            elif content_type == patching.STRATEGIC_MERGE_PATCH:
                if resource in self._custom:
                    raise ApiError(415, 'UnsupportedMediaType',
                                   f'the body of the request was in an unknown format - accepted media types '
                                   f'include: {patching.JSON_PATCH}, {patching.MERGE_PATCH}, '
                                   f'{patching.APPLY_PATCH}')
                new = patching.strategic_merge_patch(old, patch)
            else:
                new = patching.merge_patch(old, patch)
        except patching.PatchError as exc:
            raise ApiError(422, 'Invalid', f'the server rejected our request due to an error in our request: '
                                           f'{exc}') from exc
        wanted_rv = patch.get('metadata', {}).get('resourceVersion') if isinstance(patch, dict) else None
        if wanted_rv and wanted_rv != old['metadata']['resourceVersion']:
            raise errors.conflict(resource.plural or '', resource.group or '', name,
                                  'the object has been modified; please apply your changes to the latest '
                                  'version and try again')
        return self._update(resource, old, new, subresource, dry_run=dry_run, strict=strict)

    # ------------------------------------------------------------------ deleting and garbage collection

    def _delete(self, resource: kmock.resource, namespace: str | None, name: str, *,
                policy: str = 'Background', preconditions: Mapping[str, Any] | None = None,
                dry_run: bool = False) -> Obj:
        old = self._get(resource, namespace, name)
        meta = old['metadata']
        for field in ('uid', 'resourceVersion'):
            if preconditions and preconditions.get(field) and preconditions[field] != meta.get(field):
                raise errors.conflict(resource.plural or '', resource.group or '', name,
                                      f'Precondition failed: {field} in precondition: {preconditions[field]}, '
                                      f'{field} in object meta: {meta.get(field)}')
        if dry_run:
            return old
        if policy == 'Orphan':
            self._orphan(meta['uid'])
        if resource == NAMESPACES:
            return self._delete_namespace(old)
        if meta.get('finalizers'):
            if meta.get('deletionTimestamp'):
                return old
            new = copy.deepcopy(old)
            new['metadata']['deletionTimestamp'] = now_rfc3339()
            new['metadata']['deletionGracePeriodSeconds'] = 0
            return self._store(resource, new, 'MODIFIED', old)
        return self._remove(resource, old, old)

    def _remove(self, resource: kmock.resource, obj: Obj, old: Obj) -> Obj:
        """Remove the object for good, then collect its garbage: dependents, a CRD's resources, namespaces."""
        gone = self._store(resource, copy.deepcopy(obj), 'DELETED', old)
        if resource == CRDS:
            self._unregister_crd(gone)
        self._collect_garbage(gone['metadata']['uid'])
        namespace = gone['metadata'].get('namespace')
        if namespace:
            self._maybe_finish_namespace(namespace)
        return gone

    def _live_objects(self) -> list[tuple[kmock.resource, Obj]]:
        return [(res, obj.raw) for (res, _, _), obj in list(self._objects.items()) if not obj.deleted]

    def _collect_garbage(self, owner_uid: str) -> None:
        """Delete the dependents whose owners are all gone (cascading); drop dangling owner references."""
        live = {obj['metadata'].get('uid') for _, obj in self._live_objects()}
        for resource, obj in self._live_objects():
            refs = obj['metadata'].get('ownerReferences') or []
            if not any(ref.get('uid') == owner_uid for ref in refs):
                continue
            meta = obj['metadata']
            if self._current((resource, meta.get('namespace'), meta['name'])) is None:
                continue  # already collected while cascading
            remaining = [ref for ref in refs if ref.get('uid') in live and ref.get('uid') != owner_uid]
            if remaining:
                new = copy.deepcopy(obj)
                new['metadata']['ownerReferences'] = remaining
                self._update(resource, copy.deepcopy(obj), new, None)
            else:
                self._delete(resource, meta.get('namespace'), meta['name'])

    def _orphan(self, owner_uid: str) -> None:
        for resource, obj in self._live_objects():
            refs = obj['metadata'].get('ownerReferences') or []
            if any(ref.get('uid') == owner_uid for ref in refs):
                new = copy.deepcopy(obj)
                new['metadata']['ownerReferences'] = [ref for ref in refs if ref.get('uid') != owner_uid]
                if not new['metadata']['ownerReferences']:
                    del new['metadata']['ownerReferences']
                self._update(resource, copy.deepcopy(obj), new, None)

    def _delete_namespace(self, old: Obj) -> Obj:
        name = old['metadata']['name']
        if old['metadata'].get('deletionTimestamp'):
            return old
        new = copy.deepcopy(old)
        new['metadata']['deletionTimestamp'] = now_rfc3339()
        new['status'] = {'phase': 'Terminating'}
        terminating = self._store(NAMESPACES, new, 'MODIFIED', old)
        for resource, obj in self._live_objects():
            if obj['metadata'].get('namespace') == name and self._current(
                    (resource, name, obj['metadata']['name'])) is not None:
                self._delete(resource, name, obj['metadata']['name'])
        self._maybe_finish_namespace(name)
        return terminating

    def _maybe_finish_namespace(self, name: str) -> None:
        namespace = self._current((NAMESPACES, None, name))
        if namespace is None or not namespace['metadata'].get('deletionTimestamp'):
            return
        if any(obj['metadata'].get('namespace') == name for _, obj in self._live_objects()):
            return
        self._store(NAMESPACES, copy.deepcopy(namespace), 'DELETED', namespace)

    # ------------------------------------------------------------------ CRDs

    def _accept_crd(self, crd: Obj) -> None:
        spec = crd.get('spec') or {}
        names = spec.get('names') or {}
        expected = f'{names.get("plural")}.{spec.get("group")}'
        if crd['metadata'].get('name') != expected:
            raise errors.invalid('CustomResourceDefinition', 'apiextensions.k8s.io', crd['metadata'].get('name', ''),
                                 [('metadata.name', 'FieldValueInvalid',
                                   f'metadata.name: Invalid value: "{crd["metadata"].get("name")}": must be '
                                   f'spec.names.plural+"."+spec.group')])
        accepted = {**names, 'singular': names.get('singular') or str(names.get('kind', '')).lower(),
                    'listKind': names.get('listKind') or f'{names.get("kind")}List'}
        crd['status'] = {
            'acceptedNames': accepted,
            'storedVersions': [v['name'] for v in spec.get('versions') or [] if v.get('storage')],
            'conditions': [
                {'type': kind, 'status': 'True', 'reason': reason, 'message': message,
                 'lastTransitionTime': crd['metadata'].get('creationTimestamp') or now_rfc3339()}
                for kind, reason, message in (
                    ('NamesAccepted', 'NoConflicts', 'no conflicts found'),
                    ('Established', 'InitialNamesAccepted', 'the initial names have been accepted'),
                )
            ],
        }

    def _register_crd(self, crd: Obj) -> None:
        self._unregister_crd(crd, delete_objects=False)
        spec = crd['spec']
        names = crd['status']['acceptedNames']
        for version in spec.get('versions') or []:
            if not version.get('served', True):
                continue
            resource = kmock.resource(spec['group'], version['name'], names['plural'])
            self._resources[resource] = kmock.ResourceInfo(
                kind=names['kind'], singular=names['singular'], namespaced=spec.get('scope') == 'Namespaced',
                verbs=ALL_VERBS, shortnames=names.get('shortNames') or [],
                categories=names.get('categories') or [],
                subresources=[s for s in (version.get('subresources') or {}) if s in ('status', 'scale')],
            )
            self._custom[resource] = CustomResource(
                crd_name=crd['metadata']['name'], kind=names['kind'], list_kind=names['listKind'],
                schema=schemas.Schema((version.get('schema') or {}).get('openAPIV3Schema')),
                printer_columns=list(version.get('additionalPrinterColumns') or []),
                status_subresource='status' in (version.get('subresources') or {}),
            )

    def _unregister_crd(self, crd: Obj, *, delete_objects: bool = True) -> None:
        gone = [res for res, custom in self._custom.items() if custom.crd_name == crd['metadata']['name']]
        for resource in gone:
            if delete_objects:
                for obj in self._items(resource):
                    self._store(resource, copy.deepcopy(obj), 'DELETED', obj)
            del self._custom[resource]
            del self._resources[resource]

    # ------------------------------------------------------------------ watching

    async def _serve_watch_stream(self, request: rendering.Request, resource: kmock.resource,
                                  route: Route) -> aiohttp.web.StreamResponse:
        params = dict(request.params)
        if route.name is not None:
            params['fieldSelector'] = ','.join(filter(None, [params.get('fieldSelector'),
                                                             f'metadata.name={route.name}']))
        try:
            by_labels = selectors.parse_label_selector(params.get('labelSelector'))
            by_fields = selectors.parse_field_selector(params.get('fieldSelector'))
        except selectors.SelectorError as exc:
            raise errors.bad_request(str(exc)) from exc
        as_table = tables.wants_table(request.headers.get('Accept'))
        include_object = params.get('includeObject', 'Metadata')
        assert request._raw_request is not None
        response = aiohttp.web.StreamResponse(headers={'Content-Type': 'application/json'})
        await response.prepare(request._raw_request)

        def matches(obj: Obj | None) -> bool:
            if obj is None:
                return False
            ns_ok = route.namespace is None or obj['metadata'].get('namespace') == route.namespace
            return ns_ok and by_labels(obj) and by_fields(obj)

        async def send(event_type: str, obj: Obj) -> None:
            payload = self._table(resource, [obj], include_object) if as_table else obj
            await response.write(json.dumps({'type': event_type, 'object': payload}).encode() + b'\n')

        timeout = float(params['timeoutSeconds']) if params.get('timeoutSeconds') else None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout else None
        bookmarks = params.get('allowWatchBookmarks') in ('true', '1')
        api_version, kind = self._meta_of(resource)
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            since = params.get('resourceVersion')
            if not since or since == '0' or params.get('sendInitialEvents') == 'true':
                for obj in self._items(resource):
                    if matches(obj):
                        await send('ADDED', obj)
                if params.get('sendInitialEvents') == 'true' and bookmarks:
                    await send('BOOKMARK', {'kind': kind, 'apiVersion': api_version, 'metadata': {
                        'resourceVersion': str(self._revision),
                        'annotations': {'k8s.io/initial-events-end': 'true'}}})
                index = len(self._events)
            else:
                index = bisect.bisect_right(self._event_rvs, int(since) if since.isdigit() else 0)
            last_sent = loop.time()
            while not self._stopping and self.servers and (deadline is None or loop.time() < deadline):
                while index < len(self._events):
                    event = self._events[index]
                    index += 1
                    if event.resource != resource:
                        continue
                    new_ok, old_ok = matches(event.object), matches(event.old)
                    if event.type == 'MODIFIED' and new_ok != old_ok:
                        await send('ADDED' if new_ok else 'DELETED', event.object)
                    elif new_ok:
                        await send(event.type, event.object)
                    else:
                        continue
                    last_sent = loop.time()
                if bookmarks and loop.time() - last_sent > BOOKMARK_INTERVAL:
                    await send('BOOKMARK', {'kind': kind, 'apiVersion': api_version,
                                            'metadata': {'resourceVersion': str(self._revision)}})
                    last_sent = loop.time()
                wait = 0.5 if deadline is None else max(0.0, min(0.5, deadline - loop.time()))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._tick.wait(), timeout=wait)
            await response.write_eof()
        return response

    def stop_streams(self) -> None:
        """End all watch streams (before the server shuts down, so that it does not wait for them)."""
        self._stopping = True
        self._tick.set()

    # ------------------------------------------------------------------ direct access for tests

    def load_builtin_resources(self) -> None:
        """kmock's bundled builtin resources (as ``resources.load_bundled()``, without its deprecated API)."""
        self._resources.load_data(_bundled_resources())

    @property
    def resource_version(self) -> int:
        """The latest resourceVersion of the whole store (as in list metadata)."""
        return self._revision

    def get_object(self, resource: str | kmock.resource, name: str, namespace: str | None = 'default') -> Obj | None:
        """The current state of an object (a copy), or ``None`` if absent."""
        res = self.resolve(resource)
        found = self._current((res, namespace if self._resources[res].namespaced else None, name))
        return copy.deepcopy(found) if found is not None else None

    def list_objects(self, resource: str | kmock.resource, namespace: str | None = None,
                     label_selector: str | None = None) -> list[Obj]:
        """All current objects of a resource (copies), optionally in one namespace and by labels."""
        res = self.resolve(resource)
        items: list[Obj] = self._list(res, namespace, {'labelSelector': label_selector or ''})['items']
        return items

    def create_object(self, resource: str | kmock.resource, body: Mapping[str, Any],
                      namespace: str | None = None) -> Obj:
        """Create an object as a POST would (metadata filled, CRD validation; raises :class:`ApiError`)."""
        res = self.resolve(resource)
        ns = (namespace or (body.get('metadata') or {}).get('namespace') or 'default') \
            if self._resources[res].namespaced else None
        return self._create(res, ns, copy.deepcopy(dict(body)))

    def patch_object(self, resource: str | kmock.resource, name: str, patch: Any, namespace: str | None = 'default',
                     *, subresource: str | None = None) -> Obj:
        """Merge-patch (a dict) or JSON-patch (a list) an object, as a PATCH would (``subresource='status'``)."""
        res = self.resolve(resource)
        ns = namespace if self._resources[res].namespaced else None
        return self._patch(res, ns, name, patch, patching.MERGE_PATCH, subresource)

    def delete_object(self, resource: str | kmock.resource, name: str, namespace: str | None = 'default',
                      *, policy: str = 'Background') -> Obj:
        """Delete an object as a DELETE would: finalizers respected, dependents garbage-collected."""
        res = self.resolve(resource)
        ns = namespace if self._resources[res].namespaced else None
        return self._delete(res, ns, name, policy=policy)

    async def wait_for_object(
        self, resource: str | kmock.resource, name: str, namespace: str | None = 'default', *,
        until: Callable[[Obj | None], bool] = lambda obj: obj is not None, timeout_s: float = 10.0,
    ) -> Obj | None:
        """Wait until the object (``None`` if absent) satisfies ``until``; TimeoutError after ``timeout_s``."""
        async with asyncio.timeout(timeout_s):
            while True:
                tick = self._tick
                obj = self.get_object(resource, name, namespace)
                if until(obj):
                    return obj
                await tick.wait()

    async def events(self, resource: str | kmock.resource | None = None, *,
                     since: int | None = None) -> AsyncIterator[WatchEvent]:
        """Store events (optionally of one resource) after resourceVersion ``since`` (default: from now on).

        For tests playing controllers: ``rv = emulator.resource_version``, list, then ``events(since=rv)``.
        """
        res = self.resolve(resource) if resource is not None else None
        index = len(self._events) if since is None else bisect.bisect_right(self._event_rvs, since)
        while not self._stopping:
            tick = self._tick
            while index < len(self._events):
                event = self._events[index]
                index += 1
                if res is None or event.resource == res:
                    yield event
            await tick.wait()

