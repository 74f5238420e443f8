"""Domain errors: each carries the offending value in its message.

The WSGI app maps these to HTTP statuses in one table (``app.py``); the
command-line tools print the message on one line and exit with a code.
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


class ClaimsCorrupt(PyPIFallbackError):
    """The claims map holds a line that is not exactly ``<normalized name> <reason>``."""
