"""Domain errors, all of them: each carries the offending value in its message.

Each has its HTTP status in one table (``STATUS``, read through ``status_of``, which
follows subclasses); the WSGI app answers with it, the command-line tools print the
message on one line and exit with a code.
"""

from __future__ import annotations


class PyPIFallbackError(Exception):
    """Base class of every error a user can cause."""


class ConfigError(PyPIFallbackError):
    """The configuration file is wrong; the message names the file and the key."""


class InvalidFilename(PyPIFallbackError):
    """A distribution filename is unsafe or does not follow PEP 427 / PEP 625."""


class InvalidName(PyPIFallbackError):
    """A project name that is not a valid PEP 508 name (or not normalized where it must be)."""


class InvalidArchive(PyPIFallbackError):
    """A distribution is not a valid, safe archive with readable metadata."""


class MetadataMismatch(PyPIFallbackError):
    """Name or version differ between filename, form and the metadata inside the file."""


class DigestMismatch(PyPIFallbackError):
    """The declared digest does not match the bytes received."""


class TooLarge(PyPIFallbackError):
    """The upload is over ``server.max_upload_mb``."""


class FileExists(PyPIFallbackError):
    """The filename is taken by other bytes, or was used before and removed."""


class BadRequest(PyPIFallbackError):
    """A malformed upload form."""


class Forbidden(PyPIFallbackError):
    """The user may not write here, or the name is not allowed here."""


class HeldBack(Forbidden):
    """An upstream file the release-age policy holds back (403, with the reason)."""


class Unauthorized(PyPIFallbackError):
    """No authenticated user."""


class NotFound(PyPIFallbackError):
    """No such repository or project."""


class Gone(PyPIFallbackError):
    """An API that no longer exists (``submit``, ``doc_upload``)."""


class MethodNotAllowed(PyPIFallbackError):
    """An HTTP method the endpoint does not take."""


class NotAcceptable(PyPIFallbackError):
    """No representation the client accepts."""


class UpstreamUnavailable(PyPIFallbackError):
    """The upstream must be asked before going on and cannot be (HTTP 503, Retry-After)."""

    retry_after = 60


class StateCorrupt(PyPIFallbackError):
    """A state file that is not what this program writes: nothing is decided on its strength
    (HTTP 500 without paths; the error log and the commands name the file)."""


class ClaimsCorrupt(StateCorrupt):
    """The claims map holds a line that is not exactly ``<normalized name> <reason>``."""


class RecordCorrupt(StateCorrupt):
    """A project's record is not JSON, or a field of it has the wrong type."""


class UpstreamError(PyPIFallbackError):
    """The upstream failed: refused, 5xx, malformed, too large, wrong bytes (HTTP 502)."""


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer in time (HTTP 504)."""


class UpstreamBusy(UpstreamError):
    """Too many upstream requests at once: try again shortly (HTTP 503)."""


class VerifyFailed(PyPIFallbackError):
    """A file to copy (promote, pin) is not the bytes its record or the pin says."""


class TokenError(ValueError):
    """A token argument that cannot be used (a bad duration, an unknown id)."""


class TokenRefused(PyPIFallbackError):
    """A token that cannot be made or found as asked."""


class EnvironmentProblem(PyPIFallbackError):
    """The machine is not as the command needs it (a permission, a missing folder)."""


STATUS: dict[type[PyPIFallbackError], int] = {
    BadRequest: 400,
    InvalidFilename: 400,
    InvalidName: 400,
    InvalidArchive: 400,
    MetadataMismatch: 400,
    DigestMismatch: 400,
    FileExists: 400,
    TooLarge: 413,
    Unauthorized: 401,
    NotAcceptable: 406,
    UpstreamError: 502,
    UpstreamTimeout: 504,
    UpstreamBusy: 503,
    Forbidden: 403,
    NotFound: 404,
    MethodNotAllowed: 405,
    Gone: 410,
    UpstreamUnavailable: 503,
    StateCorrupt: 500,
}


def status_of(exc: PyPIFallbackError) -> int:
    """The HTTP status of a domain error: its class's, else its nearest base class's."""
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 400
