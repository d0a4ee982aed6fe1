#!/usr/bin/env python3
"""leveret's demo job (``make demo``): a real publish/consume round trip.

Starts a private RabbitMQ node (scripts/rabbitmq.py; or uses ``LEVERET_TEST_URL``), then
with the blocking client: declares an exchange and a queue, binds them, publishes a few
messages with publisher confirms, consumes them back, acknowledges them, and prints each
step with what the broker said.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rabbitmq import PrivateNode  # noqa: E402

from leveret.client import Connection, Message  # noqa: E402


def exchange(url: str) -> None:
    """The demo's body: a round trip through the broker at ``url``."""
    with Connection(url) as conn:
        props = conn.server_properties
        print(f"connected: {props.get('product')} {props.get('version')}, AMQP {conn.protocol}, "
              f"heartbeat {conn.heartbeat} s, frame_max {conn.frame_max}, "
              f"channel_max {conn.channel_max}")
        ch = conn.channel()
        ch.exchange_declare("leveret.demo", "direct", auto_delete=True)
        queue, _, _ = ch.queue_declare("", exclusive=True)  # type: ignore[misc]
        ch.queue_bind(queue, "leveret.demo", routing_key="greetings")
        print(f"declared exchange leveret.demo and queue {queue}, bound with 'greetings'")

        ch.confirm_select()
        bodies = [f"hello {n} from leveret".encode() for n in range(5)]
        started = time.perf_counter()
        for body in bodies:
            ch.basic_publish(
                Message(body, content_type="text/plain", delivery_mode=2,
                        headers={"demo": True, "sent_at": time.time()}),
                exchange="leveret.demo", routing_key="greetings",
            )
        ch.wait_for_confirms(timeout=10)
        print(f"published {len(bodies)} messages; the broker confirmed all of them")

        received: list[Message] = []

        def on_message(message: Message) -> None:
            received.append(message)
            message.ack()

        tag = ch.basic_consume(queue, callback=on_message)
        while len(received) < len(bodies):
            conn.drain_events(timeout=10)
        elapsed = (time.perf_counter() - started) * 1000
        for message in received:
            info = message.delivery_info
            print(f"  got {message.body.decode()!r} (delivery tag {info['delivery_tag']}, "
                  f"content type {message.properties.get('content_type')}, "
                  f"headers {sorted(message.headers)})")
        assert [m.body for m in received] == bodies, "messages arrived changed or out of order"
        ch.basic_cancel(tag)
        left = ch.queue_declare(queue, passive=True)
        print(f"round trip of {len(bodies)} messages in {elapsed:.1f} ms; "
              f"{left.message_count} left in the queue")  # type: ignore[union-attr]
        ch.close()


def main() -> int:
    url = os.environ.get("LEVERET_TEST_URL")
    if url:
        print(f"using the broker at {url} (LEVERET_TEST_URL)")
        exchange(url)
        return 0
    print("starting a private RabbitMQ node ...", flush=True)
    with PrivateNode() as node:
        print(f"node {node.nodename} listening on {node.url}")
        exchange(node.url)
    print("node stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
