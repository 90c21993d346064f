"""Kept for the import in server.py: the model sources live in the `sources` package."""

from __future__ import annotations

from .sources import SourceOptions, cached_path, resolve_model, sha256_file

__all__ = ["SourceOptions", "cached_path", "resolve_model", "sha256_file"]
