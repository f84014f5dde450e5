"""Structural schemas of CRDs: defaulting, pruning and validation of custom resources.

As the apiextensions server does on create, update and patch: ``default`` values are filled in,
fields the schema does not declare are pruned (unless ``x-kubernetes-preserve-unknown-fields``),
and the object is validated against ``openAPIV3Schema`` (jsonschema's Draft 4, which OpenAPI v3
schemas mostly are; ``nullable`` is honoured, ``x-kubernetes-*`` keys are ignored). Violations come
back as Kubernetes-style causes naming the field, e.g. ``spec.workers: Invalid value: 0: spec.workers
in body should be greater than or equal to 1``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

import jsonschema  # type: ignore[import-untyped]

# metadata is the server's, not the schema's: only these fields survive pruning.
_ROOT_KEYS = ('apiVersion', 'kind', 'metadata')


def _to_draft4(schema: Any) -> Any:
    """A Draft-4 equivalent: ``nullable`` widens the type, ``x-kubernetes-*`` keys go away."""
    if isinstance(schema, list):
        return [_to_draft4(item) for item in schema]
    if not isinstance(schema, Mapping):
        return schema
    out = {key: _to_draft4(value) for key, value in schema.items() if not key.startswith('x-kubernetes-')}
    if schema.get('nullable') and 'type' in out:
        out['type'] = [out['type'], 'null']
        if 'enum' in out:
            out['enum'] = [*out['enum'], None]
    out.pop('nullable', None)
    if schema.get('x-kubernetes-int-or-string'):
        out['anyOf'] = [{'type': 'integer'}, {'type': 'string'}]
    return out


def apply_defaults(value: Any, schema: Mapping[str, Any]) -> Any:
    """Fill ``default`` values of absent properties, recursively (in place; returns the value)."""
    if isinstance(value, dict):
        properties = schema.get('properties') or {}
        for key, sub in properties.items():
            if key not in value and 'default' in sub:
                value[key] = copy.deepcopy(sub['default'])
            if key in value:
                apply_defaults(value[key], sub)
        extra = schema.get('additionalProperties')
        if isinstance(extra, Mapping):
            for key in value:
                if key not in properties:
                    apply_defaults(value[key], extra)
    elif isinstance(value, list) and isinstance(schema.get('items'), Mapping):
        for item in value:
            apply_defaults(item, schema['items'])
    return value


def prune(value: Any, schema: Mapping[str, Any], *, root: bool = False, path: str = '',
          removed: list[str] | None = None) -> Any:
    """Drop the fields the schema does not declare (in place; their paths go to ``removed``)."""
    if isinstance(value, dict):
        preserve = schema.get('x-kubernetes-preserve-unknown-fields') is True
        properties = schema.get('properties') or {}
        extra = schema.get('additionalProperties')
        for key in list(value):
            where = f'{path}.{key}' if path else key
            if root and key in _ROOT_KEYS:
                continue
            if key in properties:
                prune(value[key], properties[key], path=where, removed=removed)
            elif isinstance(extra, Mapping):
                prune(value[key], extra, path=where, removed=removed)
            elif not preserve and extra is not True and schema.get('type') == 'object':
                del value[key]
                if removed is not None:
                    removed.append(where)
    elif isinstance(value, list) and isinstance(schema.get('items'), Mapping):
        for index, item in enumerate(value):
            prune(item, schema['items'], path=f'{path}[{index}]', removed=removed)
    return value


def _field(path: Any) -> str:
    text = ''
    for part in path:
        text += f'[{part}]' if isinstance(part, int) else (f'.{part}' if text else str(part))
    return text


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return 'boolean'
    return {str: 'string', int: 'integer', float: 'number', list: 'array', dict: 'object'}.get(type(value), 'null')


def _describe(error: jsonschema.ValidationError) -> tuple[str, str, str]:
    """The (field, reason, message) of a violation, worded as the API server words them."""
    field = _field(error.absolute_path)
    bad = json.dumps(error.instance)
    kind = error.validator
    value = error.validator_value
    if kind == 'required':
        missing = error.message.split("'")[1] if "'" in error.message else ''
        field = f'{field}.{missing}' if field else missing
        return field, 'FieldValueRequired', f'{field}: Required value'
    if kind == 'enum':
        allowed = ', '.join(json.dumps(item) for item in value)
        return field, 'FieldValueNotSupported', f'{field}: Unsupported value: {bad}: supported values: {allowed}'
    if kind == 'type':
        wanted = value if isinstance(value, str) else ' or '.join(value)
        return field, 'FieldValueInvalid', (
            f'{field}: Invalid value: "{_json_type(error.instance)}": {field} in body must be of type '
            f'{wanted}: {bad}')
    wording = {
        'minimum': f'should be greater than or equal to {value}',
        'maximum': f'should be less than or equal to {value}',
        'exclusiveMinimum': f'should be greater than {value}',
        'exclusiveMaximum': f'should be less than {value}',
        'minLength': f'should be at least {value} chars long',
        'maxLength': f'may not be longer than {value}',
        'minItems': f'should have at least {value} items',
        'maxItems': f'must have at most {value} items',
        'pattern': f'should match {value!r}',
        'minProperties': f'should have at least {value} properties',
        'maxProperties': f'should have at most {value} properties',
    }.get(str(kind), error.message)
    reason = 'FieldValueTooLong' if kind in ('maxLength', 'maxItems') else 'FieldValueInvalid'
    return field, reason, f'{field}: Invalid value: {bad}: {field} in body {wording}'


class Schema:
    """One served version of a CRD: its structural schema, ready to default, prune and validate."""

    def __init__(self, openapi_schema: Mapping[str, Any] | None) -> None:
        self.raw: Mapping[str, Any] = openapi_schema or {}
        draft4 = _to_draft4(self.raw)
        properties = dict(draft4.get('properties') or {})
        properties.pop('metadata', None)  # metadata is validated by the server, not the schema
        self.validator = jsonschema.Draft4Validator({**draft4, 'properties': properties})

    def admit(self, obj: dict[str, Any]) -> tuple[list[tuple[str, str, str]], list[str]]:
        """Default and prune the object in place; its violations (field, reason, message) and pruned fields."""
        if not self.raw:
            return [], []
        removed: list[str] = []
        prune(obj, self.raw, root=True, removed=removed)
        apply_defaults(obj, self.raw)
        errors = sorted(self.validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
        return [_describe(error) for error in errors], removed
