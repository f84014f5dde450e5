"""Exceptions that carry their HTTP meaning; the app maps them to responses in one place.

Bodies are always ``{"error": "..."}`` (DESIGN §5). A 500 (``BackendError`` or anything else that
escapes a handler) tells the client only ``{"error": "internal error", "requestId": ...}``: its text,
which may name files, tensors or library internals, goes to the log under that id. The worker keeps
serving.
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


class RequestTimeout(ServerError):
    """The client did not send the whole request within ``--request-read-timeout``."""

    status = 408


class PayloadTooLarge(ServerError):
    """The request exceeds a size limit (``--max-body-bytes``, images or decoded pixels per request)."""

    status = 413


class ModelNotReady(ServerError):
    """The model is still loading or warming up in this worker (or failed to load)."""

    status = 503


class BackendError(ServerError):
    """The inference backend raised while running the model."""

    status = 500
