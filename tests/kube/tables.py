"""Server-side Tables (``Accept: application/json;as=Table;v=v1;g=meta.k8s.io``) for ``kubectl get``.

Custom resources get NAME and then the CRD's ``additionalPrinterColumns`` (or NAME and AGE when it
declares none), as the apiextensions server builds them; builtin kinds get the common columns of
their real printers (Pods: NAME, READY, STATUS, RESTARTS, AGE; Services; Jobs; ConfigMaps; ...).
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

Column = dict[str, Any]
Row = list[Any]
RowBuilder = Callable[[Mapping[str, Any]], Row]

NAME_COLUMN: Column = {
    'name': 'Name', 'type': 'string', 'format': 'name', 'priority': 0,
    'description': 'Name must be unique within a namespace.',
}
AGE_COLUMN: Column = {
    'name': 'Age', 'type': 'string', 'format': '', 'priority': 0,
    'description': 'CreationTimestamp is a timestamp representing the server time when this object was created.',
}

_TOKEN_RE = re.compile(
    r"""\.(?P<field>[A-Za-z0-9_\-$]+)           # .field
      | \[(?P<index>-?\d+)\]                    # [0]
      | \[\*\]|\.\*                             # [*] or .*
      | \['(?P<quoted>[^']+)'\]                 # ['a.b']
      | \[\?\(@\.(?P<fpath>[A-Za-z0-9_.\-]+)\s*(?P<fop>==|!=)\s*(?P<fval>"[^"]*"|'[^']*'|[^)\s]+)\s*\)\]
    """,
    re.VERBOSE,
)


def jsonpath(obj: Any, path: str) -> list[Any]:
    """All values at a kubectl-style JSONPath (``.a.b``, ``[0]``, ``[*]``, ``[?(@.type=="Ready")]``)."""
    path = path.strip()
    if path.startswith('{') and path.endswith('}'):
        path = path[1:-1]
    path = path.removeprefix('$')
    values: list[Any] = [obj]
    pos = 0
    while pos < len(path):
        match = _TOKEN_RE.match(path, pos)
        if match is None:
            raise ValueError(f'unsupported JSONPath {path!r} at {path[pos:]!r}')
        pos = match.end()
        values = [found for value in values for found in _step(value, match)]
    return values


def _step(value: Any, match: re.Match[str]) -> list[Any]:
    field = match.group('field') or match.group('quoted')
    if field is not None:
        return [value[field]] if isinstance(value, Mapping) and field in value else []
    if match.group('index') is not None:
        index = int(match.group('index'))
        return [value[index]] if isinstance(value, list) and -len(value) <= index < len(value) else []
    if match.group('fpath') is not None:
        wanted = match.group('fval').strip('"\'')
        items = value if isinstance(value, list) else []
        out = []
        for item in items:
            found = jsonpath(item, '.' + match.group('fpath'))
            text = _plain(found[0]) if found else None
            if (text == wanted) == (match.group('fop') == '=='):
                out.append(item)
        return out
    if isinstance(value, list):
        return list(value)
    if isinstance(value, Mapping):
        return list(value.values())
    return []


def _plain(value: Any) -> str:
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, str):
        return value
    return json.dumps(value)


def parse_timestamp(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace('Z', '+00:00'))
    except ValueError:
        return None


def human_duration(seconds: float) -> str:
    """Kubernetes' ``duration.HumanDuration``: 42s, 5m3s, 2h10m, 3d4h, 2y10d..."""
    if seconds < -1:
        return '<invalid>'
    s = max(int(seconds), 0)
    minutes, hours, days = s // 60, s // 3600, s // 86400
    if s < 120:
        return f'{s}s'
    if minutes < 10:
        return f'{minutes}m' if s % 60 == 0 else f'{minutes}m{s % 60}s'
    if minutes < 180:
        return f'{minutes}m'
    if hours < 8:
        return f'{hours}h' if minutes % 60 == 0 else f'{hours}h{minutes % 60}m'
    if hours < 48:
        return f'{hours}h'
    if hours < 192:
        return f'{days}d' if hours % 24 == 0 else f'{days}d{hours % 24}h'
    if days < 365 * 2:
        return f'{days}d'
    years = days // 365
    if years < 8:
        return f'{years}y' if days % 365 == 0 else f'{years}y{days % 365}d'
    return f'{years}y'


def age(timestamp: str | None, now: datetime.datetime | None = None) -> str:
    when = parse_timestamp(timestamp)
    if when is None:
        return '<unknown>'
    now = now or datetime.datetime.now(datetime.UTC)
    return human_duration((now - when).total_seconds())


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get('metadata') or {}


def _name(obj: Mapping[str, Any]) -> str:
    return str(_meta(obj).get('name', ''))


def _created(obj: Mapping[str, Any]) -> str:
    return age(_meta(obj).get('creationTimestamp'))


# Custom resources: the CRD's printer columns.

def crd_columns(printer_columns: Sequence[Mapping[str, Any]]) -> tuple[list[Column], RowBuilder]:
    """Column definitions and a row builder from a CRD version's ``additionalPrinterColumns``."""
    if not printer_columns:
        return [NAME_COLUMN, AGE_COLUMN], lambda obj: [_name(obj), _created(obj)]
    columns = [NAME_COLUMN] + [
        {
            'name': column['name'],
            'type': 'string' if column.get('type') == 'date' else column.get('type', 'string'),
            'format': column.get('format', ''),
            'description': column.get('description', ''),
            'priority': column.get('priority', 0),
        }
        for column in printer_columns
    ]

    def row(obj: Mapping[str, Any]) -> Row:
        cells: Row = [_name(obj)]
        for column in printer_columns:
            found = jsonpath(obj, column['jsonPath'])
            value = found[0] if found else None
            if value is not None and column.get('type') == 'date':
                value = age(str(value))
            elif value is not None and column.get('type') == 'string' and not isinstance(value, str):
                value = _plain(value)
            cells.append(value)
        return cells

    return columns, row


# Builtin kinds: the common columns of the real printers.

def _col(name: str, description: str = '', priority: int = 0, type_: str = 'string') -> Column:
    return {'name': name, 'type': type_, 'format': '', 'description': description, 'priority': priority}


def _pod_row(obj: Mapping[str, Any]) -> Row:
    spec, status = obj.get('spec') or {}, obj.get('status') or {}
    statuses = status.get('containerStatuses') or []
    ready = sum(1 for item in statuses if item.get('ready'))
    restarts = sum(int(item.get('restartCount', 0)) for item in statuses)
    phase = status.get('reason') or status.get('phase') or 'Pending'
    if _meta(obj).get('deletionTimestamp'):
        phase = 'Terminating'
    return [
        _name(obj), f'{ready}/{len(spec.get("containers") or [])}', phase, restarts, _created(obj),
        status.get('podIP') or '<none>', spec.get('nodeName') or '<none>',
    ]


def _service_row(obj: Mapping[str, Any]) -> Row:
    spec = obj.get('spec') or {}
    ports = []
    for port in spec.get('ports') or []:
        text = str(port.get('port'))
        if port.get('nodePort'):
            text += f':{port["nodePort"]}'
        ports.append(f'{text}/{port.get("protocol", "TCP")}')
    ingress = ((obj.get('status') or {}).get('loadBalancer') or {}).get('ingress') or []
    external = ','.join(item.get('ip') or item.get('hostname', '') for item in ingress) or (
        '<pending>' if spec.get('type') == 'LoadBalancer' else '<none>')
    selector = ','.join(f'{k}={v}' for k, v in (spec.get('selector') or {}).items()) or '<none>'
    return [
        _name(obj), spec.get('type', 'ClusterIP'), spec.get('clusterIP') or '<none>', external,
        ','.join(ports) or '<none>', _created(obj), selector,
    ]


def _job_row(obj: Mapping[str, Any]) -> Row:
    spec, status = obj.get('spec') or {}, obj.get('status') or {}
    conditions = {c.get('type'): c.get('status') for c in status.get('conditions') or []}
    state = ('Complete' if conditions.get('Complete') == 'True' else
             'Failed' if conditions.get('Failed') == 'True' else
             'Suspended' if spec.get('suspend') else 'Running')
    started = parse_timestamp(status.get('startTime'))
    finished = parse_timestamp(status.get('completionTime')) or datetime.datetime.now(datetime.UTC)
    duration = human_duration((finished - started).total_seconds()) if started else ''
    return [
        _name(obj), state, f'{status.get("succeeded", 0)}/{spec.get("completions", 1)}', duration,
        _created(obj),
    ]


def _deployment_row(obj: Mapping[str, Any]) -> Row:
    spec, status = obj.get('spec') or {}, obj.get('status') or {}
    return [
        _name(obj), f'{status.get("readyReplicas", 0)}/{spec.get("replicas", 1)}',
        status.get('updatedReplicas', 0), status.get('availableReplicas', 0), _created(obj),
    ]


def _event_row(obj: Mapping[str, Any]) -> Row:
    involved = obj.get('involvedObject') or obj.get('regarding') or {}
    last = obj.get('lastTimestamp') or obj.get('eventTime') or _meta(obj).get('creationTimestamp')
    return [
        age(last), obj.get('type', ''), obj.get('reason', ''),
        f'{str(involved.get("kind", "")).lower()}/{involved.get("name", "")}',
        obj.get('message') or obj.get('note', ''),
    ]


BUILTIN_TABLES: dict[str, tuple[list[Column], RowBuilder]] = {
    'pods': (
        [NAME_COLUMN, _col('Ready', 'The aggregate readiness state of this pod for accepting traffic.'),
         _col('Status', 'The aggregate status of the containers in this pod.'),
         _col('Restarts', 'The number of times the containers in this pod have been restarted.',
              type_='integer'),
         AGE_COLUMN, _col('IP', 'IP address allocated to the pod.', 1),
         _col('Node', 'Name of the node where the pod runs.', 1)],
        _pod_row,
    ),
    'services': (
        [NAME_COLUMN, _col('Type', 'Type of the service.'), _col('Cluster-IP', 'The cluster IP.'),
         _col('External-IP', 'External IPs.'), _col('Port(s)', 'The ports exposed.'), AGE_COLUMN,
         _col('Selector', 'The label selector of the pods.', 1)],
        _service_row,
    ),
    'jobs': (
        [NAME_COLUMN, _col('Status', 'Status of the job.'), _col('Completions', 'Desired/succeeded pods.'),
         _col('Duration', 'Time the job took.'), AGE_COLUMN],
        _job_row,
    ),
    'deployments': (
        [NAME_COLUMN, _col('Ready', 'Ready/desired replicas.'), _col('Up-to-date', type_='integer'),
         _col('Available', type_='integer'), AGE_COLUMN],
        _deployment_row,
    ),
    'configmaps': (
        [NAME_COLUMN, _col('Data', 'Number of data entries.', type_='integer'), AGE_COLUMN],
        lambda obj: [_name(obj), len(obj.get('data') or {}) + len(obj.get('binaryData') or {}),
                     _created(obj)],
    ),
    'secrets': (
        [NAME_COLUMN, _col('Type'), _col('Data', type_='integer'), AGE_COLUMN],
        lambda obj: [_name(obj), obj.get('type', 'Opaque'), len(obj.get('data') or {}), _created(obj)],
    ),
    'namespaces': (
        [NAME_COLUMN, _col('Status', 'The status of the namespace.'), AGE_COLUMN],
        lambda obj: [_name(obj), (obj.get('status') or {}).get('phase', 'Active'), _created(obj)],
    ),
    'events': (
        [_col('Last Seen'), _col('Type'), _col('Reason'), _col('Object'), _col('Message')],
        _event_row,
    ),
    'customresourcedefinitions': (
        [NAME_COLUMN, _col('Created At', 'Creation timestamp.')],
        lambda obj: [_name(obj), _meta(obj).get('creationTimestamp', '')],
    ),
}


def builtin_columns(plural: str) -> tuple[list[Column], RowBuilder]:
    return BUILTIN_TABLES.get(plural, ([NAME_COLUMN, AGE_COLUMN], lambda obj: [_name(obj), _created(obj)]))


def wants_table(accept: str | None) -> bool:
    """Whether the client asked for a Table first (kubectl get), not a plain object or list."""
    first = (accept or '').split(',')[0]
    return 'as=Table' in first


def make_table(
    columns: list[Column],
    row: RowBuilder,
    objects: Sequence[Mapping[str, Any]],
    *,
    resource_version: str,
    include_object: str = 'Metadata',
) -> dict[str, Any]:
    rows = []
    for obj in objects:
        entry: dict[str, Any] = {'cells': row(obj)}
        if include_object == 'Object':
            entry['object'] = obj
        elif include_object != 'None':
            entry['object'] = {
                'kind': 'PartialObjectMetadata', 'apiVersion': 'meta.k8s.io/v1', 'metadata': _meta(obj),
            }
        rows.append(entry)
    return {
        'kind': 'Table', 'apiVersion': 'meta.k8s.io/v1',
        'metadata': {'resourceVersion': resource_version},
        'columnDefinitions': columns,
        'rows': rows,
    }
