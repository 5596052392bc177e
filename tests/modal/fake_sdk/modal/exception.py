"""The exception types of `modal.exception` that the shim can meet (same names and bases as
the SDK's, minus the grpclib base the real ones carry during their migration)."""


class Error(Exception):
    """Base class for all Modal errors."""


class AlreadyExistsError(Error):
    """Raised when a resource creation conflicts with an existing resource."""


class AuthError(Error):
    """Raised when a client has missing or invalid authentication."""


class InternalError(Error):
    """Raised when an internal error occurs in the Modal system."""


class InvalidError(Error):
    """Raised when user does something invalid."""


class ConflictError(InvalidError):
    """Raised when a resource conflict occurs between the request and current system state."""


class NotFoundError(Error):
    """Raised when a requested resource was not found."""


class PermissionDeniedError(Error):
    """Raised when a user does not have permission to perform the requested operation."""


class ServiceError(Error):
    """Raised when an error occurs in basic client/server communication."""


class TimeoutError(Error):  # noqa: A001 - the SDK's own name
    """Base class for Modal timeouts."""


class ConnectionError(Error):  # noqa: A001 - the SDK's own name
    """Raised when an issue occurs while connecting to the Modal servers."""


class ExecutionError(Error):
    """Raised when something unexpected happened during runtime."""
