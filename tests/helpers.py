"""Small helpers the client-layer tests share (URLs with options, unique names, a hang
guard)."""

from __future__ import annotations

import threading
import uuid
from typing import Any, Callable, TypeVar
from urllib.parse import urlencode, urlsplit, urlunsplit

import pytest

__all__ = ["with_options", "with_vhost", "unique", "within"]

T = TypeVar("T")


def with_options(url: str, **options: Any) -> str:
    """``url`` with query options added (keeping any it already has)."""
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode(options)) if q)
    return urlunsplit(parts._replace(query=query))


def with_vhost(url: str, path: str) -> str:
    """``url`` with its path replaced by ``path`` (already percent-encoded, without the /)."""
    return urlunsplit(urlsplit(url)._replace(path="/" + path))


def unique(prefix: str) -> str:
    """A queue or exchange name no other test uses."""
    return f"leveret-test-{prefix}-{uuid.uuid4().hex[:10]}"


def within(seconds: float, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call ``fn`` in a thread; fail the test if it has not returned after ``seconds``."""
    value: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            value.append(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the test thread below
            error.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"{getattr(fn, '__name__', fn)} hung: no return within {seconds} s")
    if error:
        raise error[0]
    return value[0]
