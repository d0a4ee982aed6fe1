"""The ``leveret`` command line: info, publish, consume, get, declare, delete, purge, bench
and conformance.  Run ``python -m leveret --help``; :func:`main` is the entry point."""

from .main import build_parser, main

__all__ = ["main", "build_parser"]
