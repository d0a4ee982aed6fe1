#!/usr/bin/env python3
"""leveret's demo job (``make demo``): a real producer/consumer round trip.

Starts a private RabbitMQ node (scripts/rabbitmq.py; or uses ``LEVERET_TEST_URL``), then,
with leveret's kombu-style API: declares an exchange and a queue bound to it, publishes a
few JSON messages with publisher confirms (each publish returns once the broker confirmed
it), consumes them back with a Consumer that decodes and acknowledges them, and prints each
step with what the broker said.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rabbitmq import PrivateNode  # noqa: E402

from leveret import Connection, Consumer, Exchange, Producer, Queue  # noqa: E402
from leveret.highlevel import Message  # noqa: E402


def exchange(url: str) -> None:
    """The demo's body: a round trip through the broker at ``url``."""
    greetings = Exchange("leveret.demo", type="direct", durable=False, auto_delete=True)
    inbox = Queue("leveret.demo.inbox", exchange=greetings, routing_key="greetings",
                  durable=False, auto_delete=True)
    with Connection(url) as conn:
        conn.connect()
        props = conn.connection.server_properties
        print(f"connected to {props.get('product')} {props.get('version')} at {conn.as_uri()}")

        producer = Producer(conn.channel(), exchange=greetings, routing_key="greetings")
        received: list[tuple[dict[str, object], Message]] = []

        def on_message(body: dict[str, object], message: Message) -> None:
            received.append((body, message))
            message.ack()

        with Consumer(conn.channel(), queues=[inbox], callbacks=[on_message]):
            print(f"declared exchange {greetings.name} and queue {inbox.name}, bound with "
                  f"'greetings'; consuming")
            started = time.perf_counter()
            sent = [{"n": n, "text": f"hello {n} from leveret", "at": time.time()} for n in range(5)]
            for payload in sent:
                producer.publish(payload)  # waits for the broker's confirm
            print(f"published {len(sent)} JSON messages; the broker confirmed each one")
            while len(received) < len(sent):
                conn.drain_events(timeout=10)
            elapsed = (time.perf_counter() - started) * 1000
        for body, message in received:
            print(f"  got {body['text']!r} (content type {message.content_type}, "
                  f"delivery tag {message.delivery_tag}, acknowledged: {message.acknowledged})")
        assert [b for b, _ in received] == sent, "messages arrived changed or out of order"
        print(f"round trip of {len(sent)} messages in {elapsed:.1f} ms, all acknowledged")


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
