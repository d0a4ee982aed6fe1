"""A kombu/carrot-style API (connections, producers, consumers) on top of ``leveret.client``.

::

    from leveret.highlevel import Connection, Exchange, Queue

    media = Exchange("media", type="direct")
    video = Queue("video", exchange=media, routing_key="video")

    with Connection("amqp://guest:guest@localhost//") as conn:
        producer = conn.Producer(serializer="json")
        producer.publish({"name": "/tmp/lolcat1.avi"}, exchange=media, routing_key="video",
                         declare=[video])          # waits for the broker's confirm

        def process_media(body, message):
            print(body)
            message.ack()

        with conn.Consumer(video, callbacks=[process_media]):
            conn.drain_events(timeout=1)

Safe by default: producers wait for publisher confirms (a nack, a missing exchange or an
unroutable ``mandatory`` message raises), consumers decode only JSON and raw bodies (text,
bytes, types no serializer claims) unless told otherwise, and a consumer cancelled by the
broker is reported, not fatal.
"""

from .connection import BrokerConnection, Connection
from .entity import Exchange, Queue, binding, maybe_declare
from .exceptions import (
    CompressionNotInstalled,
    ConsumerCancelled,
    ContentDisallowed,
    DecodeError,
    DecompressedSizeExceeded,
    DecompressionError,
    Empty,
    EncodeError,
    InconsistencyError,
    LimitExceeded,
    MessageReturned,
    MessageStateError,
    NotBoundError,
    OperationalError,
    RecoveryPaused,
    SerializerNotInstalled,
)
from .message import Message
from .messaging import Consumer, Producer
from .simple import SimpleBuffer, SimpleQueue
from .transport import TransportChannel, TransportConnection

__all__ = [
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
    "TransportChannel",
    "TransportConnection",
    "NotBoundError",
    "ContentDisallowed",
    "DecodeError",
    "EncodeError",
    "MessageStateError",
    "LimitExceeded",
    "OperationalError",
    "RecoveryPaused",
    "ConsumerCancelled",
    "MessageReturned",
    "SerializerNotInstalled",
    "InconsistencyError",
    "CompressionNotInstalled",
    "DecompressionError",
    "DecompressedSizeExceeded",
    "Empty",
]
