"""A local receiver for development, like ``stripe listen``: verify, print, answer."""

from __future__ import annotations

import datetime
import json
from argparse import ArgumentParser
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from django.core.management.base import CommandError

from webhooks_app import signing
from webhooks_app.conf import app_settings
from webhooks_app.http import OutgoingRequest, send
from webhooks_app.management.cli import EXIT_PROBLEM, UsageError, WebhooksCommand

# Headers passed on with --forward-to: what a receiver verifies and routes on.
FORWARDED = ("content-type", "user-agent", "webhook-id", "webhook-timestamp", "webhook-signature")
DIFF_WIDTH = 60


def short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= DIFF_WIDTH else text[: DIFF_WIDTH - 1] + "…"


def describe(body: bytes) -> tuple[str, list[str]]:
    """The payload's headline and its changed fields as ``name: before → after`` lines."""
    try:
        payload = json.loads(body)
    except ValueError:
        return f"(not JSON, {len(body)} bytes)", []
    if not isinstance(payload, dict):
        return "(JSON, but not an object)", []
    headline = f"{payload.get('id')}  {payload.get('event')}  model={payload.get('model') or '-'}"
    data, previous = payload.get("data"), payload.get("previous")
    lines = []
    if isinstance(data, dict) and isinstance(previous, dict):
        fields = payload.get("changed_fields") or [
            k for k in data if data.get(k) != previous.get(k)
        ]
        lines = [f"    {f}: {short(previous.get(f))} → {short(data.get(f))}" for f in fields]
    return headline, lines


class Command(WebhooksCommand):
    help = """Listen on 127.0.0.1 for webhook requests, verify both signatures with your
secret, print each event with a short diff of what changed, and answer with a chosen status.

  manage.py webhooks_listen --secret whsec_... --port 8765
  manage.py webhooks_listen --secret whsec_... --status 500          # practise failures
  manage.py webhooks_listen --secret whsec_... --forward-to http://localhost:3000/hook

Point a webhook at http://127.0.0.1:<port>/ (or send one with webhooks_send_test --url).
Ctrl-C stops it. Exit status: 0, or 1 when any request failed verification, 2 for bad
arguments."""

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--port", type=int, default=8765, help="default 8765; 0 = any free")
        parser.add_argument("--secret", help="the webhook's secret; without it nothing is verified")
        parser.add_argument("--signature-header", help="hex signature header (default: settings)")
        parser.add_argument("--signature-prefix", help="hex signature prefix (default: settings)")
        parser.add_argument("--status", type=int, default=200, help="status to answer (200)")
        parser.add_argument("--forward-to", help="also POST each request to this URL")
        parser.add_argument("--max-requests", type=int, help="stop after this many requests")
        parser.add_argument("--timeout", type=float, help="stop after this many seconds")

    def handle(self, *args: Any, **options: Any) -> None:
        if not 100 <= options["status"] <= 599:
            raise UsageError("--status must be an HTTP status (100-599)")
        if not 0 <= options["port"] <= 65535:
            raise UsageError("--port must be 0-65535")
        forward = options["forward_to"]
        if forward and not forward.startswith(("http://", "https://")):
            raise UsageError("--forward-to must start with http:// or https://")
        self.options = options
        self.header = options["signature_header"] or str(app_settings.SIGNATURE_HEADER)
        self.prefix = (
            options["signature_prefix"]
            if options["signature_prefix"] is not None
            else str(app_settings.SIGNATURE_PREFIX)
        )
        self.failures = 0
        self.count = 0
        command = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = dict(self.headers.items())
                command.receive(self.command, self.path, headers, body)
                self.send_response(command.options["status"])
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            do_PUT = do_PATCH = do_POST

            def log_message(self, format: str, *args: Any) -> None:
                pass  # our own lines say more

        try:
            server = HTTPServer(("127.0.0.1", options["port"]), Handler)
        except OSError as exc:
            raise UsageError(f"cannot listen on 127.0.0.1:{options['port']}: {exc}") from None
        server.timeout = 0.2
        port = server.server_address[1]
        self.stdout.write(
            f"Ready! Listening on http://127.0.0.1:{port}/ "
            f"({'verifying signatures' if options['secret'] else 'NOT verifying: no --secret'}, "
            f"answering {options['status']}). Ctrl-C to stop."
        )
        deadline = (
            datetime.datetime.now() + datetime.timedelta(seconds=options["timeout"])
            if options["timeout"]
            else None
        )
        try:
            while True:
                if options["max_requests"] and self.count >= options["max_requests"]:
                    break
                if deadline and datetime.datetime.now() >= deadline:
                    break
                server.handle_request()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
        self.stdout.write(f"Stopped after {self.count} request(s), {self.failures} unverified.")
        if self.failures:
            raise CommandError(
                f"{self.failures} request(s) failed signature verification",
                returncode=EXIT_PROBLEM,
            )

    def receive(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        self.count += 1
        when = datetime.datetime.now().strftime("%H:%M:%S")
        headline, diff = describe(body)
        verdicts = self.verify(headers, body)
        ok = all(v == "ok" for v in verdicts.values())
        if not ok:
            self.failures += 1
        checks = "  ".join(f"{name}:{verdict}" for name, verdict in verdicts.items())
        style = self.style.SUCCESS if ok else self.style.ERROR
        self.stdout.write(style(f"[{when}] {method} {path}  {headline}  {checks}"))
        for line in diff:
            self.stdout.write(line)
        if self.options["forward_to"]:
            self.forward(headers, body)
        self.stdout.write(f"    <- answered {self.options['status']}")

    def verify(self, headers: dict[str, str], body: bytes) -> dict[str, str]:
        secret = self.options["secret"]
        if not secret:
            return {"unverified": "ok"}
        verdicts = {}
        try:
            signing.verify_standard(secret, headers, body)
            verdicts["standard"] = "ok"
        except signing.InvalidSignature as exc:
            verdicts["standard"] = f"FAILED ({exc})"
        lowered = {k.lower(): v for k, v in headers.items()}
        hex_signature = lowered.get(self.header.lower())
        if hex_signature is None:
            verdicts["hex"] = f"FAILED (no {self.header} header)"
        else:
            try:
                signing.verify_hex(secret, hex_signature, body, prefix=self.prefix)
                verdicts["hex"] = "ok"
            except signing.InvalidSignature as exc:
                verdicts["hex"] = f"FAILED ({exc})"
        return verdicts

    def forward(self, headers: dict[str, str], body: bytes) -> None:
        keep = {*FORWARDED, self.header.lower()}
        request = OutgoingRequest(
            method="POST",
            url=self.options["forward_to"],
            headers={k: v for k, v in headers.items() if k.lower() in keep},
            body=body,
            timeout=10.0,
            # A developer's own app on their own machine, named on the command line: the one
            # request the package makes without the target guard (README, "Security").
            guarded=False,
        )
        result = send(request)
        if result.status_code is not None:
            self.stdout.write(
                f"    -> forwarded: HTTP {result.status_code} in {result.duration_ms} ms"
            )
        else:
            self.stdout.write(f"    -> forward failed: {result.summary}")
