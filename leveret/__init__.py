"""leveret: a pure-Python client for AMQP 0-9-1 and 0-8, the protocols RabbitMQ speaks.

Three layers, each importing only the ones below it:

* ``leveret.wire``: field types, frames and the generated per-version method codecs;
* ``leveret.client``: the sans-IO connection core and the thin drivers around it;
* ``leveret.highlevel``: a kombu/carrot-style API built on the client layer.

The standard library is the only run-time dependency.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# The kombu-style names, re-exported from leveret.highlevel (``from leveret import
# Connection, Exchange, Queue, Producer, Consumer``).  Imported on first use, so that
# ``import leveret.wire`` or ``leveret.client`` alone does not load the high-level layer.
_HIGHLEVEL = (
    "Connection",
    "BrokerConnection",
    "Exchange",
    "Queue",
    "binding",
    "maybe_declare",
    "Producer",
    "Consumer",
    "Message",
    "SimpleQueue",
    "SimpleBuffer",
)

__all__ = ["__version__", "LeveretError", *_HIGHLEVEL]

if TYPE_CHECKING:  # pragma: no cover
    from .highlevel import (  # noqa: F401
        BrokerConnection,
        Connection,
        Consumer,
        Exchange,
        Message,
        Producer,
        Queue,
        SimpleBuffer,
        SimpleQueue,
        binding,
        maybe_declare,
    )
    from .wire.errors import LeveretError  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in _HIGHLEVEL:
        from . import highlevel

        return getattr(highlevel, name)
    if name == "LeveretError":
        from .wire.errors import LeveretError

        return LeveretError
    raise AttributeError(f"module 'leveret' has no attribute {name!r}")
