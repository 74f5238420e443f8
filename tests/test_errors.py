"""Every error class is in errors.py, and its HTTP status comes from one table that
follows subclasses."""

from __future__ import annotations

import inspect

import pytest
from pypi_fallback import errors
from pypi_fallback.errors import (
    FileExists,
    NotFound,
    PyPIFallbackError,
    UpstreamBusy,
    UpstreamError,
    UpstreamTimeout,
    VerifyFailed,
    status_of,
)


class _SpecialNotFound(NotFound):
    pass


@pytest.mark.parametrize(("exc", "status"), [
    (FileExists("x"), 400), (UpstreamError("x"), 502), (UpstreamTimeout("x"), 504),
    (UpstreamBusy("x"), 503), (_SpecialNotFound("x"), 404), (VerifyFailed("x"), 400),
    (PyPIFallbackError("x"), 400)])
def test_status_of_follows_subclasses(exc: PyPIFallbackError, status: int) -> None:
    assert status_of(exc) == status


def test_no_error_class_outside_errors_py() -> None:
    import importlib
    import pkgutil

    import pypi_fallback

    for info in pkgutil.iter_modules(pypi_fallback.__path__):
        module = importlib.import_module(f"pypi_fallback.{info.name}")
        for name, value in vars(module).items():
            if inspect.isclass(value) and issubclass(value, Exception) and \
                    value.__module__ == module.__name__:
                assert module is errors, f"{info.name}.{name} is defined outside errors.py"
