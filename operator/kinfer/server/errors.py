"""Exceptions that carry their HTTP meaning; the app maps them to responses in one place.

Bodies are always ``{"error": "..."}`` (DESIGN §5). Anything else that escapes a handler is a 500 with
its message, and the worker keeps serving.
"""

from __future__ import annotations


class ServerError(Exception):
    """Base class: an error with an HTTP status code and a message meant for the client."""

    status: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(ServerError):
    """The request body or parameters cannot be used (not an image, wrong tensor shape, ...)."""

    status = 400


class ModelNotFound(ServerError):
    """The request names a model this server does not serve."""

    status = 404


class PayloadTooLarge(ServerError):
    """The request body exceeds ``--max-body-bytes``."""

    status = 413


class ModelNotReady(ServerError):
    """The model is still loading or warming up in this worker (or failed to load)."""

    status = 503


class BackendError(ServerError):
    """The inference backend raised while running the model."""

    status = 500
