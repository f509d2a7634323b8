"""A fake payments provider for the support demo: a real HTTP server on 127.0.0.1.

    POST /refunds        {"order_id", "amount_cents", "reason"} + an Idempotency-Key header
                         executes a refund; a key seen before returns the first refund and
                         executes nothing (as Stripe and most payment APIs do)
    GET  /refunds/<key>  the refund made with that key, or 404 (what a reconcile hook asks)

The ledger is a JSON file written atomically on every change, so it outlives the process:
the demo kills itself with SIGKILL and the next process still sees every refund.
"""

from __future__ import annotations

import json
import os
import threading
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class PaymentsService:
    """The server and its ledger; `start()` binds a free port and returns the base URL."""

    def __init__(self, ledger: Path) -> None:
        self.ledger = ledger
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> str:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                key = urllib.parse.unquote(self.path.removeprefix("/refunds/"))
                refund = service.read()["refunds"].get(key)
                if refund is None:
                    self.reply(404, {"error": f"no refund with key {key!r}"})
                else:
                    self.reply(200, refund)

            def do_POST(self) -> None:
                key = self.headers.get("Idempotency-Key")
                if self.path != "/refunds" or not key:
                    self.reply(400, {"error": "POST /refunds with an Idempotency-Key header"})
                    return
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                self.reply(200, service.refund(key, body))

            def reply(self, status: int, data: dict[str, Any]) -> None:
                payload = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:  # keep the demo's output readable
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_port}"

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def read(self) -> dict[str, Any]:
        if not self.ledger.exists():
            return {"refunds": {}, "requests": {}}
        data: dict[str, Any] = json.loads(self.ledger.read_text())
        return data

    def refund(self, key: str, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            data = self.read()
            data["requests"][key] = data["requests"].get(key, 0) + 1
            refund = data["refunds"].get(key)
            if refund is None:  # a new key: the money moves
                refund = {
                    "refund_id": f"re_{len(data['refunds']) + 1:04d}",
                    "order_id": body["order_id"],
                    "amount_cents": body["amount_cents"],
                    "reason": body.get("reason", ""),
                    "status": "succeeded",
                }
                data["refunds"][key] = refund
            self.write(data)
            return dict(refund)

    def write(self, data: dict[str, Any]) -> None:
        tmp = self.ledger.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.ledger)


def stats(ledger: Path, key_prefix: str = "") -> dict[str, int]:
    """What the ledger says happened (for idempotency keys starting with `key_prefix`)."""
    data = PaymentsService(ledger).read()
    return {
        "refunds_executed": sum(key.startswith(key_prefix) for key in data["refunds"]),
        "requests_received": sum(
            count for key, count in data["requests"].items() if key.startswith(key_prefix)
        ),
    }


# -- the client the demo's tools use -------------------------------------------------------


def create_refund(
    base_url: str, order_id: str, amount_cents: int, reason: str, *, idempotency_key: str
) -> dict[str, Any]:
    """POST /refunds; the same idempotency key never refunds twice."""
    body = {"order_id": order_id, "amount_cents": amount_cents, "reason": reason}
    request = urllib.request.Request(
        f"{base_url}/refunds",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Idempotency-Key": idempotency_key},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


def find_refund(base_url: str, idempotency_key: str) -> dict[str, Any] | None:
    """The refund made with this key, or None if the service never executed it."""
    try:
        url = f"{base_url}/refunds/{urllib.parse.quote(idempotency_key, safe='')}"
        with urllib.request.urlopen(url, timeout=10) as r:
            result: dict[str, Any] = json.loads(r.read())
            return result
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise
