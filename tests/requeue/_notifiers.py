"""What the notification tests share: a real HTTP server for webhooks, and a real command.

The server listens on 127.0.0.1 and keeps every JSON body posted to it: `/ok` answers 204,
`/broken` 500, `/silent` nothing until the server is closed (a webhook that hangs). Used as a
context manager, so that a silent request is let go when the test ends. The command is
`scripts/record_notification.py`, which appends what it was told, one JSON line per call.
"""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psutil

RECORD = Path(__file__).parent / "scripts" / "record_notification.py"


def recorder(out: Path, *extra: str) -> list[str]:
    """The command that records each notification in `out` (`--hang`: and then never ends)."""
    return [sys.executable, str(RECORD), str(out), *extra]


def records(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []


def process_ended(pid: int) -> bool:
    """Gone, or a zombie nobody has reaped yet."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


class Webhook:
    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any], str]] = []  # path, JSON body, Content-Type
        self._closing = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                owner.received.append((self.path, json.loads(body), self.headers["Content-Type"]))
                if self.path == "/silent":
                    owner._closing.wait()
                    return
                self.send_response(500 if self.path == "/broken" else 204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's name)
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def bodies(self, path: str) -> list[dict[str, Any]]:
        return [body for where, body, _ in self.received if where == path]

    def __enter__(self) -> Webhook:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
