"""pypi-fallback: a private Python package index served by Apache."""

from __future__ import annotations

__version__ = "0.1.0"
