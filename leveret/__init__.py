"""leveret: a pure-Python client for AMQP 0-9-1 and 0-8, the protocols RabbitMQ speaks.

Three layers, each importing only the ones below it:

* ``leveret.wire``: field types, frames and the generated per-version method codecs;
* ``leveret.client``: the sans-IO connection core and the thin drivers around it;
* ``leveret.highlevel``: a kombu/carrot-style API built on the client layer.

The standard library is the only run-time dependency.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
