"""Every error a request or a start can end in, and the one table that maps them to HTTP status,
metrics reason and termination-message prefix. Nothing else in the runtime picks a status code."""

from __future__ import annotations

import modeldeploy_contract as contract


class ServingError(Exception):
    """A request failed; the message is sent to the client as is, so it names the tensor or field
    at fault and what was expected."""

    reason = "internal"


class BadRequest(ServingError):
    reason = "bad_request"


class Unauthorized(ServingError):
    reason = "unauthorized"


class NotFound(ServingError):
    reason = "not_found"


class MethodNotAllowed(ServingError):
    reason = "method_not_allowed"

    def __init__(self, message: str, allow: str) -> None:
        super().__init__(message)
        self.allow = allow  # the methods the path takes, for the Allow header


class PayloadTooLarge(ServingError):
    reason = "too_large"


class Overloaded(ServingError):
    """The queue is full: the client should retry later (``Retry-After``)."""

    reason = "overloaded"


class NotReady(ServingError):
    reason = "not_ready"


class QueueTimeout(ServingError):
    """The request waited in the batch queue past MODELDEPLOY_QUEUE_TIMEOUT_US (``Retry-After``)."""

    reason = "queue_timeout"


class InternalError(ServingError):
    reason = "internal"


HTTP_STATUS: dict[type[ServingError], int] = {
    BadRequest: 400,
    Unauthorized: 401,
    NotFound: 404,
    MethodNotAllowed: 405,
    PayloadTooLarge: 413,
    Overloaded: 503,
    NotReady: 503,
    QueueTimeout: 503,
    InternalError: 500,
    ServingError: 500,
}


def http_status(exc: ServingError) -> int:
    for cls in type(exc).__mro__:
        if cls in HTTP_STATUS:
            return HTTP_STATUS[cls]
    return 500


class StartupError(Exception):
    """The server cannot become ready. Its ``termination_message`` is the one line the operator
    reads from the container status and classifies by prefix (docs/architecture.md)."""

    prefix = contract.MODEL_LOAD_FAILED

    @property
    def termination_message(self) -> str:
        return contract.termination_message(self.prefix, str(self))


class ModelLoadFailed(StartupError):
    prefix = contract.MODEL_LOAD_FAILED


class GpuUnavailable(StartupError):
    prefix = contract.GPU_UNAVAILABLE


class LatencyBudgetExceeded(StartupError):
    prefix = contract.LATENCY_BUDGET_EXCEEDED


class InvalidConfiguration(StartupError):
    prefix = contract.INVALID_CONFIGURATION


class GoldenSetMismatch(StartupError):
    """The model's answers on its golden set are outside the tolerances (golden.py)."""

    prefix = contract.GOLDEN_SET_MISMATCH


class ProviderMismatch(StartupError):
    """A GPU execution provider was asked for and another one runs the model (providers.py)."""

    prefix = contract.PROVIDER_MISMATCH
