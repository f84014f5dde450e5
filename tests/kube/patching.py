"""The three patch flavours of the API server: JSON merge, RFC 6902 JSON patch, strategic merge.

Strategic merge is what ``kubectl apply`` and ``kubectl patch`` send for builtin kinds: a merge patch
whose lists of objects merge by a key (containers by ``name``, ports by ``containerPort``...) and
whose ``$``-prefixed keys are directives. The emulator knows the common merge keys and honours
``$patch: delete|replace`` and ``$retainKeys``; other directives are dropped.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import jsonpatch
import jsonpointer

JSON_PATCH = 'application/json-patch+json'
MERGE_PATCH = 'application/merge-patch+json'
STRATEGIC_MERGE_PATCH = 'application/strategic-merge-patch+json'
APPLY_PATCH = 'application/apply-patch+yaml'

# Lists of objects that strategic merge merges element-wise, by field name → merge key.
MERGE_KEYS: dict[str, str] = {
    'containers': 'name',
    'initContainers': 'name',
    'ephemeralContainers': 'name',
    'volumes': 'name',
    'volumeMounts': 'mountPath',
    'volumeDevices': 'devicePath',
    'env': 'name',
    'imagePullSecrets': 'name',
    'conditions': 'type',
    'hostAliases': 'ip',
    'ownerReferences': 'uid',
    'tolerations': 'key',
    'topologySpreadConstraints': 'topologyKey',
}
# Port lists merge by the port number; which field that is depends on the owning object.
PORT_KEYS = ('containerPort', 'port')


class PatchError(ValueError):
    """A patch that cannot be applied (answered as 422, like a failed JSON-patch ``test``)."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, ``null`` deletes, everything else replaces."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(target: Mapping[str, Any], operations: list[Any]) -> dict[str, Any]:
    """RFC 6902; a failed ``test`` or a missing path raises :class:`PatchError`."""
    try:
        result = jsonpatch.apply_patch(copy.deepcopy(dict(target)), operations, in_place=False)
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
        raise PatchError(str(exc)) from exc
    if not isinstance(result, dict):
        raise PatchError('the patch does not produce an object')
    return result


def strategic_merge_patch(target: Any, patch: Any, field: str = '') -> Any:
    """A strategic merge patch, with the common merge keys of builtin kinds."""
    if isinstance(patch, list):
        return _merge_list(target, patch, field)
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    directive = patch.get('$patch')
    if directive == 'delete':
        return None
    base: dict[str, Any] = {} if directive == 'replace' or not isinstance(target, Mapping) else dict(target)
    retain = patch.get('$retainKeys')
    if isinstance(retain, list):
        base = {key: value for key, value in base.items() if key in retain}
    for key, value in patch.items():
        if key.startswith('$'):
            continue
        if value is None:
            base.pop(key, None)
            continue
        merged = strategic_merge_patch(base.get(key), value, key)
        if merged is None:
            base.pop(key, None)
        else:
            base[key] = merged
    return base


def _merge_list(target: Any, patch: list[Any], field: str) -> list[Any]:
    dicts = [item for item in patch if isinstance(item, Mapping)]
    key = MERGE_KEYS.get(field)
    if key is None and field == 'ports':
        key = next((k for k in PORT_KEYS if dicts and all(k in item for item in dicts)), None)
    if key is None or not isinstance(target, list) or len(dicts) != len(patch):
        return [
            item for item in (strategic_merge_patch(None, elem) for elem in patch) if item is not None
        ]
    if any(item.get('$patch') == 'replace' for item in dicts):
        return [strip_directives(item) for item in dicts if item.get('$patch') != 'replace']
    result = [copy.deepcopy(item) for item in target]
    for item in dicts:
        index = next(
            (i for i, old in enumerate(result) if isinstance(old, Mapping) and old.get(key) == item.get(key)),
            None,
        )
        if item.get('$patch') == 'delete':
            if index is not None:
                del result[index]
        elif index is None:
            result.append(strip_directives(item))
        else:
            result[index] = strategic_merge_patch(result[index], item)
    return result


def strip_directives(value: Any) -> Any:
    """The value without strategic-merge ``$`` directives (for new list elements)."""
    if isinstance(value, Mapping):
        return {k: strip_directives(v) for k, v in value.items() if not k.startswith('$')}
    if isinstance(value, list):
        return [strip_directives(item) for item in value]
    return value
