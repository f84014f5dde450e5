"""Label and field selectors, as the API server applies them on list and watch.

Label selectors: ``a=b``, ``a==b``, ``a!=b``, ``a``, ``!a``, ``a in (x,y)``, ``a notin (x,y)``.
Field selectors: ``path=value``, ``path==value``, ``path!=value`` over dotted paths
(``metadata.name``, ``involvedObject.uid``, ``status.phase``); the API server supports only a few
fields per resource, the emulator accepts any dotted path.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

Predicate = Callable[[Mapping[str, Any]], bool]

_SET_RE = re.compile(r'^\s*([^\s!=]+)\s+(in|notin)\s+\((.*)\)\s*$')


class SelectorError(ValueError):
    """A selector the server cannot parse (answered as 400 Bad Request)."""


def _split_terms(selector: str) -> list[str]:
    """Split on commas that are not inside the parentheses of a set-based term."""
    terms: list[str] = []
    depth = 0
    current = ''
    for char in selector:
        if char == '(':
            depth += 1
        elif char == ')':
            depth -= 1
        if char == ',' and depth == 0:
            terms.append(current)
            current = ''
        else:
            current += char
    terms.append(current)
    return [term.strip() for term in terms if term.strip()]


def _label_check(key: str, op: str, values: frozenset[str]) -> Callable[[Mapping[str, str]], bool]:
    def check(labels: Mapping[str, str]) -> bool:
        match op:
            case 'in' | '=':
                return labels.get(key) in values
            case 'notin' | '!=':
                return labels.get(key) not in values
            case 'exists':
                return key in labels
            case _:  # '!'
                return key not in labels
    return check


def parse_label_selector(selector: str | None) -> Predicate:
    """A predicate over an object's ``metadata.labels`` (everything matches an empty selector)."""
    checks: list[Callable[[Mapping[str, str]], bool]] = []
    for term in _split_terms(selector or ''):
        if match := _SET_RE.match(term):
            key, op, values_text = match.groups()
            values = frozenset(value.strip() for value in values_text.split(',') if value.strip())
            checks.append(_label_check(key, op, values))
        elif '!=' in term:
            key, value = (part.strip() for part in term.split('!=', 1))
            checks.append(_label_check(key, '!=', frozenset([value])))
        elif '=' in term:
            key, value = (part.strip() for part in re.split(r'==?', term, maxsplit=1))
            checks.append(_label_check(key, '=', frozenset([value])))
        elif term.startswith('!'):
            checks.append(_label_check(term[1:].strip(), '!', frozenset()))
        elif re.fullmatch(r'[A-Za-z0-9./_-]+', term):
            checks.append(_label_check(term, 'exists', frozenset()))
        else:
            raise SelectorError(f'unable to parse requirement: {term!r}')

    def predicate(obj: Mapping[str, Any]) -> bool:
        labels = (obj.get('metadata') or {}).get('labels') or {}
        return all(check(labels) for check in checks)

    return predicate


def field_value(obj: Mapping[str, Any], path: str) -> str:
    """The string form of a dotted field (``''`` when absent), as field selectors compare it."""
    value: Any = obj
    for key in path.split('.'):
        value = value.get(key) if isinstance(value, Mapping) else None
    if value is None:
        return ''
    if isinstance(value, bool):
        return 'true' if value else 'false'
    return str(value)


def parse_field_selector(selector: str | None) -> Predicate:
    """A predicate over dotted fields of the object (everything matches an empty selector)."""
    checks: list[tuple[str, bool, str]] = []
    for term in _split_terms(selector or ''):
        if '!=' in term:
            path, value = term.split('!=', 1)
            checks.append((path.strip(), False, value.strip()))
        elif '=' in term:
            path, value = re.split(r'==?', term, maxsplit=1)
            checks.append((path.strip(), True, value.strip()))
        else:
            raise SelectorError(f'invalid field selector: {term!r}')

    def predicate(obj: Mapping[str, Any]) -> bool:
        return all((field_value(obj, path) == value) == equal for path, equal, value in checks)

    return predicate
