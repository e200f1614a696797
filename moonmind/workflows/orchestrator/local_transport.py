"""The embedded default's message transport: kombu's filesystem transport, made atomic.

kombu's stock channel creates the message file first and writes the JSON into it after,
while a consumer may already have listed, moved and read the file: it then reads an empty
or partial message, and the Celery worker stops with an unrecoverable ``JSONDecodeError``.
The faster the consumer polls, the likelier that is. Here a message is written under a
name no consumer picks (a leading dot, no ``.msg`` suffix) and renamed into place, so a
consumer only ever lists complete messages.
"""

from __future__ import annotations

import os
import uuid
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    # kombu names the message "message" in its abstract channel, "payload" here.
    def _put(self, queue: Any, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        # The same name kombu gives a message: consumers sort by it to keep FIFO order.
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = os.path.join(self.data_folder_out, f".{name}.partial")
        body = dumps(payload).encode()
        try:
            with open(partial, "wb") as handle:
                handle.write(body)
            os.replace(partial, final)
        except OSError as exc:
            try:
                os.unlink(partial)
            except OSError:
                pass
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel
