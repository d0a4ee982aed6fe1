"""leveret's benchmarks: leveret against other Python AMQP clients, in the same run.

``python -m benchmarks codec`` times the frame codecs alone (no socket, no broker);
``python -m benchmarks client`` times whole clients against one RabbitMQ node.  Every figure
is compared with the peers measured in the same run, never with a fixed number: the machine
is shared and noisy, ratios measured side by side are what carries over.

The peers (pika, py-amqp, pamqp, kombu, aiormq) are the ``bench`` extra of pyproject.toml;
nothing in ``leveret/`` imports them or this package.
"""

from __future__ import annotations

__all__: list[str] = []
