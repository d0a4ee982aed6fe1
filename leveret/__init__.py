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

if TYPE_CHECKING:  # pragma: no cover  (``import x as x``: re-exported, for type checkers)
    from .highlevel import BrokerConnection as BrokerConnection
    from .highlevel import Connection as Connection
    from .highlevel import Consumer as Consumer
    from .highlevel import Exchange as Exchange
    from .highlevel import Message as Message
    from .highlevel import Producer as Producer
    from .highlevel import Queue as Queue
    from .highlevel import SimpleBuffer as SimpleBuffer
    from .highlevel import SimpleQueue as SimpleQueue
    from .highlevel import binding as binding
    from .highlevel import maybe_declare as maybe_declare
    from .wire.errors import LeveretError as LeveretError


def __getattr__(name: str) -> Any:
    if name in _HIGHLEVEL:
        from . import highlevel

        return getattr(highlevel, name)
    if name == "LeveretError":
        from .wire.errors import LeveretError

        return LeveretError
    raise AttributeError(f"module 'leveret' has no attribute {name!r}")


def __dir__() -> list[str]:
    # The names imported on first use, for dir(), help() and tab completion (PEP 562).
    return sorted({*globals(), *__all__})
