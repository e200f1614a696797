"""Real HTTP receivers on 127.0.0.1 for webhook tests: one that answers from a script of
status codes and keeps every request, and one that accepts connections and never answers."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes
    answered: int  # the status code the receiver answered with

    def json(self) -> dict[str, Any]:
        return dict(json.loads(self.body))

    def signed_with(self, secret: str) -> bool:
        """The signature header is the HMAC-SHA256 of these exact bytes under ``secret``."""
        expected = hmac.new(secret.encode(), self.body, hashlib.sha256).hexdigest()
        given = self.headers.get("x-moonmind-signature", "")
        return hmac.compare_digest(given, f"sha256={expected}")


class Receiver:
    """Answers POSTs with ``script`` status codes in turn, then 200; keeps each request."""

    def __init__(self, script: Sequence[int] = ()) -> None:
        self.received: list[Received] = []
        self._script = list(script)
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._lock:
                    code = receiver._script.pop(0) if receiver._script else 200
                    receiver.received.append(
                        Received({k.lower(): v for k, v in self.headers.items()}, body, code)
                    )
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def events(self, event: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.headers.get("x-moonmind-event") == event]

    def wait_for(self, event: str, count: int = 1, timeout: float = 60) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.events(event)
            if len(found) >= count:
                return found
            time.sleep(0.1)
        raise AssertionError(f"{self.url} got {len(self.events(event))} x {event}: {self.received}")

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class HangingReceiver:
    """Accepts TCP connections on 127.0.0.1 and never reads or answers (a dead receiver)."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}/hook"
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted.append(conn)

    def close(self) -> None:
        self._stop.set()
        for conn in self.accepted:
            conn.close()
        self._sock.close()
