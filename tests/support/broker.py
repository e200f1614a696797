"""RabbitMQ clean-up for tests that declare their own queues."""

from __future__ import annotations

from kombu import Connection


def delete_queues(amqp_url: str, *names: str) -> None:
    """Delete queues a test used; a queue that was never declared is not an error."""
    with Connection(amqp_url) as conn:
        for name in names:
            try:
                conn.default_channel.queue_delete(name)
            except Exception:  # never declared, or already gone
                pass
