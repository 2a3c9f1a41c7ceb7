"""The demo project: its receiver's signature checks, and that it installs and runs.

The suite runs under ``tests.settings``, so the demo is exercised two ways: its pure
verification functions are imported directly, and anything that needs the demo's own settings
runs ``manage.py`` in a subprocess against a throwaway database (``WEBHOOKS_DEMO_DB``).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from demo_project.receiver.verification import check_scalar, check_standard
from webhooks_app import signing

REPO_DIR = Path(__file__).resolve().parent.parent
MANAGE = str(REPO_DIR / "manage.py")
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
BODY = b'{"id":"evt_1","event":"create","model":"blogPost","data":{"title":"Hi"}}'


def standard_headers(secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    timestamp = int(time.time()) if timestamp is None else timestamp
    return {
        "Webhook-Id": "msg_1",
        "Webhook-Timestamp": str(timestamp),
        "Webhook-Signature": signing.standard_signature_header([secret], "msg_1", timestamp, body),
    }


def test_check_standard_accepts_what_the_library_signs() -> None:
    assert check_standard(SECRET, standard_headers(SECRET, BODY), BODY) is None


@pytest.mark.parametrize(
    ("secret", "body", "age", "reason"),
    [
        ("whsec_" + "A" * 32, BODY, 0, "no signature matched"),
        (SECRET, BODY + b" ", 0, "no signature matched"),
        (SECRET, BODY, 3600, "outside the tolerance"),
    ],
    ids=["wrong-secret", "tampered-body", "replayed"],
)
def test_check_standard_rejects(secret: str, body: bytes, age: int, reason: str) -> None:
    headers = standard_headers(secret, BODY, int(time.time()) - age)
    assert reason in (check_standard(SECRET, headers, body) or "")


def test_check_standard_rejects_missing_headers() -> None:
    assert check_standard(SECRET, {}, BODY) == "missing header webhook-id"


def test_check_scalar_accepts_the_prefixed_hex_header() -> None:
    header = "sha256=" + signing.sign_hex("plain-secret", BODY)
    assert check_scalar("plain-secret", header, BODY) is None


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        # The docs' handler compares the whole string, so a bare hex digest is not enough.
        signing.sign_hex("plain-secret", BODY),
        "sha256=" + signing.sign_hex("other-secret", BODY),
        "sha256=" + signing.sign_hex("plain-secret", BODY + b" "),
        "sha256=nothex",
    ],
    ids=["absent", "empty", "no-prefix", "wrong-secret", "other-body", "garbage"],
)
def test_check_scalar_rejects(header: str | None) -> None:
    assert check_scalar("plain-secret", header, BODY) is not None


def demo_env(db_path: Path, **extra: str) -> dict[str, str]:
    # pytest-django exported DJANGO_SETTINGS_MODULE=tests.settings; the demo needs its own.
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "demo_project.settings",
        "WEBHOOKS_DEMO_DB": str(db_path),
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


def manage(
    db_path: Path, *args: str, timeout: float = 60, **env: str
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, MANAGE, *args],
        cwd=REPO_DIR,
        env=demo_env(db_path, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, f"manage.py {' '.join(args)}:\n{result.stdout}{result.stderr}"
    return result


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db_path = tmp_path_factory.mktemp("demo") / "db.sqlite3"
    manage(db_path, "migrate", "--noinput")
    return db_path


def test_demo_passes_checks_and_has_no_missing_migrations(demo_db: Path) -> None:
    manage(demo_db, "check")
    manage(demo_db, "makemigrations", "blog", "receiver", "--check", "--dry-run")


def test_demo_setup_is_idempotent(demo_db: Path) -> None:
    first = manage(demo_db, "demo_setup").stdout
    second = manage(demo_db, "demo_setup").stdout
    assert "Created superuser 'admin'" in first
    assert "already exists" in second
    assert "/receiver/" in second


RECEIVER_SCRIPT = """
import json, time
from django.conf import settings
from django.test import Client
from django.test.utils import setup_test_environment
from webhooks_app import signing
from demo_project.receiver.models import ReceivedWebhook, ReceiverSwitch

setup_test_environment()
client = Client()
secrets = settings.DEMO_RECEIVER_SECRETS
body = b'{"id":"evt_9","event":"update","model":"page","data":{}}'
now = int(time.time())
signature = signing.standard_signature_header([secrets["standard"]], "msg_9", now, body)
good = {"webhook-id": "msg_9", "webhook-timestamp": str(now), "webhook-signature": signature}
scalar = {"X-Scalar-Signature": "sha256=" + signing.sign_hex(secrets["scalar"], body)}

def post(slot, headers):
    return client.post(f"/receiver/{slot}/", body, content_type="application/json",
                       headers=headers).status_code

statuses = [post("standard", good), post("scalar", scalar), post("standard", {}),
            post("scalar", {"X-Scalar-Signature": "sha256=0"})]
ReceiverSwitch.get().fail_for(60)
statuses += [post("scalar", scalar)]
ReceiverSwitch.get().recover()
statuses += [post("standard", good), client.get("/receiver/").status_code]
rows = [[r.slot, r.verified, r.status_code, r.event_id, r.event, r.model]
        for r in ReceivedWebhook.objects.order_by("id")]
print(json.dumps({"statuses": statuses, "rows": rows}))
"""


def test_receiver_verifies_each_slot_and_can_fail_on_purpose(demo_db: Path) -> None:
    output = manage(demo_db, "shell", "-c", RECEIVER_SCRIPT).stdout
    result = json.loads(output.strip().splitlines()[-1])
    assert result["statuses"] == [200, 200, 401, 401, 500, 200, 200]
    assert [row[:3] for row in result["rows"]] == [
        ["standard", True, 200],
        ["scalar", True, 200],
        ["standard", False, 401],
        ["scalar", False, 401],
        ["scalar", True, 500],
        ["standard", True, 200],
    ]
    assert result["rows"][0][3:] == ["evt_9", "update", "page"]


CREATE_POST = """
from demo_project.blog.models import BlogPost
BlogPost.objects.create(title="Hello", slug="hello", status="published", body="First post")
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_http(url: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "run.py exited before the server answered"
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {timeout}s")


def received(db_path: Path) -> list[tuple[str, str, str, int, int]]:
    # Read the file directly: a Django setup per poll would cost more than the whole wait.
    with sqlite3.connect(db_path) as connection:
        return connection.execute(
            "SELECT slot, event, model, verified, status_code FROM receiver_receivedwebhook"
        ).fetchall()


@pytest.mark.qcluster
def test_run_py_delivers_a_saved_post_to_both_receivers_and_stops_on_sigint(
    tmp_path: Path,
) -> None:
    db_path = tmp_path / "db.sqlite3"
    port = str(free_port())
    # Migrate with the same port as run.py: the settings' endpoints are synced into the DB.
    manage(db_path, "migrate", "--noinput", WEBHOOKS_DEMO_PORT=port)
    log_path = tmp_path / "run.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, str(REPO_DIR / "demo_project" / "run.py")],
            cwd=REPO_DIR,
            env=demo_env(db_path, WEBHOOKS_DEMO_PORT=port),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for_http(f"http://127.0.0.1:{port}/receiver/", process, timeout=20)
            manage(db_path, "shell", "-c", CREATE_POST, WEBHOOKS_DEMO_PORT=port)
            deadline = time.monotonic() + 30
            expected = {("standard", "create"), ("scalar", "create")}
            while time.monotonic() < deadline:
                rows = received(db_path)
                got = {(slot, event) for slot, event, model, ok, status in rows if ok}
                if expected <= got:
                    break
                time.sleep(0.3)
            else:
                raise AssertionError(f"receiver got {rows}\n{log_path.read_text()}")
            assert all(row[2] == "blogPost" and row[3] == 1 for row in rows), rows
        finally:
            process.send_signal(signal.SIGINT)
            returncode = process.wait(timeout=20)
    assert returncode == 0, log_path.read_text()
    assert "Stopping qcluster" in log_path.read_text()


def test_run_py_stops_before_starting_anything_when_its_port_is_taken(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other_program:
        other_program.bind(("127.0.0.1", 0))
        other_program.listen(1)
        port = str(other_program.getsockname()[1])
        completed = subprocess.run(
            [sys.executable, str(REPO_DIR / "demo_project" / "run.py")],
            cwd=REPO_DIR,
            env=demo_env(tmp_path / "db.sqlite3", WEBHOOKS_DEMO_PORT=port),
            capture_output=True,
            text=True,
            timeout=30,
        )

    assert completed.returncode == 1
    assert completed.stdout == ""  # no "Demo running", no cluster
    assert completed.stderr.strip() == (
        f"Port {port} is in use by another program; stop it, or run the demo on another "
        "port: WEBHOOKS_DEMO_PORT=8001 make demo"
    )
