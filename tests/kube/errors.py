"""API errors as the API server reports them: an HTTP status and a ``kind: Status`` body."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error the emulated API server answers with a Status body (404, 409, 422...)."""

    def __init__(
        self, code: int, reason: str, message: str, details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f'{code} {reason}: {message}')
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details or {}

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            'kind': 'Status', 'apiVersion': 'v1', 'metadata': {},
            'status': 'Failure', 'message': self.message, 'reason': self.reason, 'code': self.code,
        }
        if self.details:
            body['details'] = self.details
        return body


def qualified(plural: str, group: str) -> str:
    """``pods`` for the core group, ``widgets.test.dev`` otherwise (as the server names them)."""
    return f'{plural}.{group}' if group else plural


def not_found(plural: str, group: str, name: str) -> ApiError:
    return ApiError(404, 'NotFound', f'{qualified(plural, group)} "{name}" not found',
                    {'name': name, 'group': group, 'kind': plural})


def no_such_resource() -> ApiError:
    return ApiError(404, 'NotFound', 'the server could not find the requested resource')


def already_exists(plural: str, group: str, name: str) -> ApiError:
    return ApiError(409, 'AlreadyExists', f'{qualified(plural, group)} "{name}" already exists',
                    {'name': name, 'group': group, 'kind': plural})


def conflict(plural: str, group: str, name: str, why: str) -> ApiError:
    return ApiError(409, 'Conflict', f'Operation cannot be fulfilled on {qualified(plural, group)} "{name}": {why}',
                    {'name': name, 'group': group, 'kind': plural})


def invalid(kind: str, group: str, name: str, causes: list[tuple[str, str, str]]) -> ApiError:
    """422 with one cause per violated field; ``causes`` are (field, reason, message) triples."""
    qualified_kind = f'{kind}.{group}' if group else kind
    summary = '[' + ', '.join(message for _, _, message in causes) + ']' if len(causes) > 1 else causes[0][2]
    return ApiError(422, 'Invalid', f'{qualified_kind} "{name}" is invalid: {summary}', {
        'name': name, 'group': group, 'kind': kind,
        'causes': [{'reason': reason, 'message': message.split(': ', 1)[-1], 'field': field}
                   for field, reason, message in causes],
    })


def bad_request(message: str) -> ApiError:
    return ApiError(400, 'BadRequest', message)
