"""Signatures as receivers check them.

The Standard Webhooks signature is checked against the spec's published test vector, an
independent implementation of the spec written here, and the ``standardwebhooks`` package
when it is installed. The hex header is checked with ``hmac`` directly and with the receiver
code the seed documents publish (run in Node when it is installed, mirrored in Python
always), because those receivers are what our users actually deploy.
"""

import base64
import datetime
import hashlib
import hmac
import json
import shutil
import subprocess
import time
from typing import Any

import pytest
import time_machine
from django.utils import timezone

from webhooks_app import signing
from webhooks_app.delivery import OutgoingRequest, build_request, redact_headers
from webhooks_app.models import Webhook
from webhooks_app.serialization import dumps

# https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
VECTOR_HEADERS = {
    "webhook-id": VECTOR_ID,
    "webhook-timestamp": str(VECTOR_TIMESTAMP),
    "webhook-signature": VECTOR_SIGNATURE,
}

EVENT_ID = "evt_2mC3Yk1fP0tQ8ZrVw6aXb9"
NODE = shutil.which("node")


def spec_signature(secret: str, message_id: str, timestamp: str, body: bytes) -> str:
    """The spec, written out independently of webhooks_app.signing."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(digest.digest()).decode()


def hex_hmac(secret: str, data: bytes) -> str:
    return hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()


def make_webhook(**fields: Any) -> Webhook:
    # Unsaved: build_request needs no database.
    return Webhook(url="https://example.com/hook", **fields)


def verify_vector(headers: dict[str, str], body: bytes = VECTOR_BODY, **kwargs: Any) -> None:
    kwargs.setdefault("now", VECTOR_TIMESTAMP)
    signing.verify_standard(VECTOR_SECRET, headers, body, **kwargs)


# --- Standard Webhooks: the published test vector ------------------------------------------


def test_sign_standard_reproduces_test_vector():
    signature = signing.sign_standard(VECTOR_SECRET, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY)
    assert signature == VECTOR_SIGNATURE
    assert spec_signature(VECTOR_SECRET, VECTOR_ID, str(VECTOR_TIMESTAMP), VECTOR_BODY) == (
        VECTOR_SIGNATURE
    )


def test_verify_standard_accepts_test_vector():
    verify_vector(VECTOR_HEADERS)
    # Header names are case-insensitive, as they are on the wire.
    verify_vector({key.title(): value for key, value in VECTOR_HEADERS.items()})


@pytest.mark.parametrize("offset", [-300, 300])
def test_verify_standard_accepts_edge_of_tolerance(offset):
    verify_vector(VECTOR_HEADERS, now=VECTOR_TIMESTAMP + offset)


@pytest.mark.parametrize("offset", [-301, 301, -86400, 86400])
def test_verify_standard_rejects_timestamp_outside_tolerance(offset):
    # Too old is a replay; too new is a clock (or an attacker) from the future.
    with pytest.raises(signing.InvalidSignature, match="tolerance"):
        verify_vector(VECTOR_HEADERS, now=VECTOR_TIMESTAMP + offset)


def test_verify_standard_tolerance_is_configurable():
    verify_vector(VECTOR_HEADERS, now=VECTOR_TIMESTAMP + 3600, tolerance=3600)
    with pytest.raises(signing.InvalidSignature):
        verify_vector(VECTOR_HEADERS, now=VECTOR_TIMESTAMP + 61, tolerance=60)


def test_verify_standard_rejects_wrong_body():
    with pytest.raises(signing.InvalidSignature, match="no signature matched"):
        verify_vector(VECTOR_HEADERS, body=b'{"test": 2432232315}')
    with pytest.raises(signing.InvalidSignature):
        verify_vector(VECTOR_HEADERS, body=b'{"test":2432232314}')


def test_verify_standard_rejects_wrong_secret():
    with pytest.raises(signing.InvalidSignature):
        signing.verify_standard(
            signing.generate_secret(), VECTOR_HEADERS, VECTOR_BODY, now=VECTOR_TIMESTAMP
        )


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_verify_standard_rejects_missing_header(missing):
    headers = {key: value for key, value in VECTOR_HEADERS.items() if key != missing}
    with pytest.raises(signing.InvalidSignature, match=f"missing header {missing}"):
        verify_vector(headers)


@pytest.mark.parametrize(
    "signature",
    [
        "",
        "garbage",
        "v1,garbage",
        "v1,",
        "v1," + "A" * 44,
        VECTOR_SIGNATURE.replace("v1,", "v2,"),
        VECTOR_SIGNATURE.replace("v1,", ""),
        VECTOR_SIGNATURE[:-2] + "x=",
    ],
)
def test_verify_standard_rejects_garbage_signature(signature):
    with pytest.raises(signing.InvalidSignature):
        verify_vector({**VECTOR_HEADERS, "webhook-signature": signature})


@pytest.mark.parametrize("timestamp", ["", "soon", "1614265330.0", "0x603"])
def test_verify_standard_rejects_bad_timestamp(timestamp):
    with pytest.raises(signing.InvalidSignature):
        verify_vector({**VECTOR_HEADERS, "webhook-timestamp": timestamp})


@pytest.mark.parametrize(
    "signature",
    [
        f"v1,{'A' * 43}= {VECTOR_SIGNATURE}",
        f"v2,whatever v1,bm9wZQ== {VECTOR_SIGNATURE}",
        f"{VECTOR_SIGNATURE} v1,bm9wZQ==",
    ],
)
def test_verify_standard_accepts_any_matching_entry(signature):
    # During a secret rotation the sender signs with both keys; either one must do.
    verify_vector({**VECTOR_HEADERS, "webhook-signature": signature})


@pytest.mark.parametrize(
    "verify",
    [
        pytest.param(
            lambda: verify_vector({**VECTOR_HEADERS, "webhook-signature": "v1,é"}),
            id="standard",
        ),
        pytest.param(lambda: signing.verify_hex("secret", "é", b"{}"), id="hex"),
    ],
)
def test_non_ascii_signature_is_invalid_not_a_crash(verify):
    with pytest.raises(signing.InvalidSignature):
        verify()


# --- headers of an outgoing request --------------------------------------------------------


def send(webhook: Webhook, body: bytes) -> OutgoingRequest:
    request = build_request(webhook, EVENT_ID, body)
    assert request.body == body  # signed bytes and sent bytes are the same object
    return request


BODY = dumps(
    {
        "event": "create",
        "model": "blogPost",
        "data": {"id": 1, "title": "Grüße 😀", "price": 19.99, "rating": 4.0, "tags": ["a"]},
    }
).encode()


@pytest.mark.parametrize("prefix", ["", "sha256="])
def test_hex_header_verified_independently(prefix):
    secret = signing.generate_secret()
    webhook = make_webhook(
        secret=secret, signature_header="X-Webhook-Signature", signature_prefix=prefix
    )
    request = send(webhook, BODY)
    assert request.headers["X-Webhook-Signature"] == prefix + hex_hmac(secret, BODY)
    signing.verify_hex(secret, request.headers["X-Webhook-Signature"], BODY, prefix=prefix)


def test_hex_header_uses_settings_defaults(settings):
    settings.WEBHOOKS = {
        **settings.WEBHOOKS,
        "SIGNATURE_HEADER": "X-Hub-Signature-256",
        "SIGNATURE_PREFIX": "sha256=",
    }
    # signature_prefix=None means "the site default"; "" would mean "no prefix".
    request = send(make_webhook(secret="plain-secret"), BODY)
    assert request.headers["X-Hub-Signature-256"] == "sha256=" + hex_hmac("plain-secret", BODY)


def test_standard_headers_verified_independently():
    secret = signing.generate_secret()
    before = int(time.time())
    request = send(make_webhook(secret=secret), BODY)
    headers = request.headers
    assert headers["Content-Type"] == "application/json"
    assert headers["webhook-id"] == EVENT_ID
    assert before <= int(headers["webhook-timestamp"]) <= int(time.time())
    assert headers["webhook-signature"] == spec_signature(
        secret, EVENT_ID, headers["webhook-timestamp"], BODY
    )
    signing.verify_standard(secret, headers, BODY)


def test_custom_headers_cannot_replace_signatures():
    secret = signing.generate_secret()
    webhook = make_webhook(
        secret=secret,
        headers={"X-Tenant": "42", "webhook-signature": "v1,forged", "content-type": "text/xml"},
    )
    headers = send(webhook, BODY).headers
    assert headers["X-Tenant"] == "42"
    assert "v1,forged" not in headers.values()
    assert "text/xml" not in headers.values()
    signing.verify_standard(secret, headers, BODY)


def test_custom_header_cannot_shadow_hex_signature_header():
    webhook = make_webhook(secret="s", headers={"x-webhook-signature": "forged"})
    headers = send(webhook, BODY).headers
    assert "forged" not in headers.values()


# --- the seed documents' receivers ---------------------------------------------------------

# Each receiver as its seed document publishes it, with the header and prefix it expects.
SEED_RECEIVERS = {
    # seed 000, Express with express.raw(): "sha256=" + hex over the raw bytes, with !==.
    "000-express": ("X-Scalar-Signature", "sha256="),
    # seed 000, Next.js: hex over JSON.stringify(req.body), header.replace('sha256=', '').
    "000-nextjs": ("X-Scalar-Signature", "sha256="),
    # seed 002: hex over the raw body, compared as hex-decoded buffers.
    "002": ("X-Signature", ""),
    # seeds 003 and 004 (Express): hex over JSON.stringify(req.body), no prefix.
    "003": ("X-Webhook-Signature", ""),
    "004": ("X-Webhook-Signature", ""),
    # seed 004 (Flask): hex over request.get_data() with hmac.compare_digest.
    "004-flask": ("X-Webhook-Signature", ""),
}

NODE_RECEIVERS = r"""
const crypto = require("crypto");
const safeEqual = (a, b) => {
  try { return crypto.timingSafeEqual(a, b); } catch (e) { return false; }  // length differs
};
const receivers = {
  "000-express": (req, secret) => {
    const signature = req.headers["x-scalar-signature"];
    const expectedSignature = crypto.createHmac("sha256", secret)
      .update(req.rawBody).digest("hex");
    return `sha256=${expectedSignature}` === signature;
  },
  "000-nextjs": (req, secret) => {
    const signature = req.headers["x-scalar-signature"];
    const expectedSignature = crypto.createHmac("sha256", secret)
      .update(JSON.stringify(req.body)).digest("hex");
    return safeEqual(
      Buffer.from(signature.replace("sha256=", "")), Buffer.from(expectedSignature));
  },
  "002": (req, secret) => {
    const receivedSignature = req.headers["x-signature"];
    const expectedSignature = crypto.createHmac("sha256", secret)
      .update(req.rawBody).digest("hex");
    return safeEqual(
      Buffer.from(expectedSignature, "hex"), Buffer.from(receivedSignature, "hex"));
  },
  "003": (req, secret) => {
    const signature = req.headers["x-webhook-signature"];
    const payload = JSON.stringify(req.body);
    const expectedSignature = crypto.createHmac("sha256", secret)
      .update(payload).digest("hex");
    return safeEqual(Buffer.from(signature), Buffer.from(expectedSignature));
  },
};
receivers["004"] = receivers["003"];
const cases = JSON.parse(require("fs").readFileSync(0, "utf8"));
const results = cases.map(({ receiver, headers, body, secret }) => {
  const rawBody = Buffer.from(body, "base64");
  const lowered = Object.fromEntries(
    Object.entries(headers).map(([name, value]) => [name.toLowerCase(), value]));
  const req = { headers: lowered, rawBody, body: JSON.parse(rawBody.toString("utf8")) };
  return receivers[receiver](req, secret);
});
process.stdout.write(JSON.stringify(results));
"""


def js_restringify(body: bytes) -> bytes:
    """Python's stand-in for ``JSON.stringify(JSON.parse(body))``, good for bodies whose
    numbers Python and JavaScript print alike (the body used here)."""
    parsed = json.loads(body)
    return json.dumps(parsed, separators=(",", ":"), ensure_ascii=False).encode()


def python_receiver(receiver: str, headers: dict[str, str], body: bytes, secret: str) -> bool:
    lowered = {name.lower(): value for name, value in headers.items()}
    if receiver == "000-express":
        return "sha256=" + hex_hmac(secret, body) == lowered["x-scalar-signature"]
    if receiver == "000-nextjs":
        received = lowered["x-scalar-signature"].replace("sha256=", "", 1)
        return hmac.compare_digest(received, hex_hmac(secret, js_restringify(body)))
    if receiver == "002":
        return hmac.compare_digest(
            bytes.fromhex(hex_hmac(secret, body)), bytes.fromhex(lowered["x-signature"])
        )
    if receiver in ("003", "004"):
        expected = hex_hmac(secret, js_restringify(body))
        return hmac.compare_digest(lowered["x-webhook-signature"], expected)
    assert receiver == "004-flask"
    return hmac.compare_digest(lowered["x-webhook-signature"], hex_hmac(secret, body))


def run_receivers(runtime: str, cases: list[tuple[str, dict[str, str], bytes, str]]) -> list[bool]:
    if runtime == "python":
        return [python_receiver(*case) for case in cases]
    # The Flask receiver is Python in the seed too.
    node_cases = [case for case in cases if case[0] != "004-flask"]
    payload = [
        {"receiver": r, "headers": h, "body": base64.b64encode(b).decode(), "secret": s}
        for r, h, b, s in node_cases
    ]
    completed = subprocess.run(
        [str(NODE), "-e", NODE_RECEIVERS],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    node_results = iter(json.loads(completed.stdout))
    return [
        python_receiver(*case) if case[0] == "004-flask" else next(node_results) for case in cases
    ]


RUNTIMES = [
    pytest.param("node", marks=pytest.mark.skipif(NODE is None, reason="node is not installed")),
    "python",
]


def seed_cases(
    body: bytes, received: bytes | None = None
) -> list[tuple[str, dict[str, str], bytes, str]]:
    """One request per seed receiver, signed over ``body``; ``received`` is what arrives."""
    cases = []
    for receiver, (header, prefix) in SEED_RECEIVERS.items():
        secret = "whsec_" + receiver if receiver.startswith("003") else f"secret-{receiver}"
        webhook = make_webhook(secret=secret, signature_header=header, signature_prefix=prefix)
        request = send(webhook, body)
        cases.append((receiver, request.headers, body if received is None else received, secret))
    return cases


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_seed_receivers_accept_our_requests(runtime):
    assert run_receivers(runtime, seed_cases(BODY)) == [True] * len(SEED_RECEIVERS)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_seed_receivers_reject_tampered_body(runtime):
    tampered = BODY.replace(b"19.99", b"0.01")
    assert run_receivers(runtime, seed_cases(BODY, tampered)) == [False] * len(SEED_RECEIVERS)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_seed_receivers_need_javascript_shaped_json(runtime):
    # Why serialization.dumps exists: Python's default json.dumps body (spaces, \u escapes,
    # 4.0) verifies over the raw bytes but not over JSON.stringify(req.body).
    body = json.dumps(json.loads(BODY) | {"rating": 4.0}).encode()
    results = dict(zip(SEED_RECEIVERS, run_receivers(runtime, seed_cases(body)), strict=True))
    assert results == {
        "000-express": True,
        "000-nextjs": False,
        "002": True,
        "003": False,
        "004": False,
        "004-flask": True,
    }


# --- the standardwebhooks package ----------------------------------------------------------


def test_standardwebhooks_package_verifies_test_vector():
    standardwebhooks = pytest.importorskip("standardwebhooks")
    with time_machine.travel(VECTOR_TIMESTAMP, tick=False):
        parsed = standardwebhooks.Webhook(VECTOR_SECRET).verify(VECTOR_BODY, VECTOR_HEADERS)
    assert parsed == {"test": 2432232314}


def test_standardwebhooks_package_verifies_our_headers():
    standardwebhooks = pytest.importorskip("standardwebhooks")
    secret = signing.generate_secret()
    request = send(make_webhook(secret=secret), BODY)
    assert standardwebhooks.Webhook(secret).verify(BODY, request.headers) == json.loads(BODY)
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(secret).verify(BODY + b" ", request.headers)
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(signing.generate_secret()).verify(BODY, request.headers)


def test_standardwebhooks_package_accepts_unpadded_secret():
    standardwebhooks = pytest.importorskip("standardwebhooks")
    secret = signing.generate_secret(32).rstrip("=")
    request = send(make_webhook(secret=secret), BODY)
    standardwebhooks.Webhook(secret).verify(BODY, request.headers)


# --- secrets -------------------------------------------------------------------------------


def test_generate_secret_format():
    secret = signing.generate_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32
    assert signing.generate_secret() != secret
    assert len(signing.standard_key(signing.generate_secret(24))) == 24


def test_standard_key():
    assert signing.standard_key(VECTOR_SECRET) == base64.b64decode(
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    )
    # A secret not in whsec_ form (typed into settings) signs with its UTF-8 bytes...
    assert signing.standard_key("test-secret") == b"test-secret"
    assert signing.standard_key("sécret") == "sécret".encode()
    # ...and so does a whsec_ secret whose remainder is not base64.
    assert signing.standard_key("whsec_not base64!") == b"whsec_not base64!"


def test_mask_secret_hides_the_middle():
    secret = signing.generate_secret()
    masked = signing.mask_secret(secret)
    assert masked.startswith("whsec_")
    assert masked.endswith(secret[-4:])
    middle = secret.removeprefix("whsec_")[:-4]
    assert not any(middle[i : i + 4] in masked for i in range(len(middle) - 3))

    plain = "a-long-secret-typed-into-settings"
    assert signing.mask_secret(plain) == "••••••••ings"
    assert signing.mask_secret("") == ""


@pytest.mark.parametrize("secret", ["abc", "abcd", "whsec_ab"])
def test_mask_secret_never_shows_a_short_secret(secret):
    assert secret.removeprefix("whsec_") not in signing.mask_secret(secret)


def test_redact_headers():
    headers = {
        "Authorization": "Bearer abc",
        "Proxy-Authorization": "Basic abc",
        "X-Api-Key": "k-123",
        "Cookie": "session=abc",
        "X-Session-Cookie": "abc",
        "X-Auth-Token": "t-123",
        "X-Client-Secret": "s-123",
        "X-Password": "hunter2",
        "X-Webhook-Signature": "ab12",
        "X-Hub-Signature-256": "sha256=ab12",
        "webhook-id": EVENT_ID,
        "webhook-timestamp": "1614265330",
        "webhook-signature": VECTOR_SIGNATURE,
        "Content-Type": "application/json",
        "User-Agent": "django-webhooks",
        "X-Tenant": "42",
    }
    redacted = redact_headers(headers)
    hidden = {name for name, value in redacted.items() if value != headers[name]}
    assert hidden == {
        "Authorization",
        "Proxy-Authorization",
        "X-Api-Key",
        "Cookie",
        "X-Session-Cookie",
        "X-Auth-Token",
        "X-Client-Secret",
        "X-Password",
    }
    assert set(redacted.values()) & {"Bearer abc", "k-123", "session=abc", "hunter2"} == set()
    assert list(redacted) == list(headers)


def test_redact_headers_of_a_built_request():
    secret = signing.generate_secret()
    webhook = make_webhook(secret=secret, headers={"Authorization": "Bearer t0k3n"})
    request = send(webhook, BODY)
    redacted = redact_headers(request.headers)
    assert redacted["Authorization"] != "Bearer t0k3n"
    for name in ("webhook-signature", "X-Webhook-Signature", "webhook-id", "Content-Type"):
        assert redacted[name] == request.headers[name]
    assert secret not in json.dumps(redacted)


# --- secret rotation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("previous_secret", "expires_in", "expected"),
    [
        ("old", datetime.timedelta(hours=1), ["new", "old"]),
        ("old", datetime.timedelta(seconds=-1), ["new"]),
        ("old", datetime.timedelta(0), ["new"]),
        ("old", None, ["new"]),
        ("", datetime.timedelta(hours=1), ["new"]),
    ],
)
def test_signing_secrets(previous_secret, expires_in, expected):
    now = timezone.now()
    webhook = make_webhook(
        secret="new",
        previous_secret=previous_secret,
        previous_secret_expires_at=None if expires_in is None else now + expires_in,
    )
    assert webhook.signing_secrets(now=now) == expected


def test_signing_secrets_defaults_to_now():
    webhook = make_webhook(
        secret="new",
        previous_secret="old",
        previous_secret_expires_at=timezone.now() + datetime.timedelta(minutes=5),
    )
    assert webhook.signing_secrets() == ["new", "old"]
    with time_machine.travel(timezone.now() + datetime.timedelta(minutes=6)):
        assert webhook.signing_secrets() == ["new"]


def test_rotation_sends_two_signatures_that_both_verify():
    new, old = signing.generate_secret(), signing.generate_secret()
    webhook = make_webhook(
        secret=new,
        previous_secret=old,
        previous_secret_expires_at=timezone.now() + datetime.timedelta(hours=1),
    )
    headers = send(webhook, BODY).headers
    entries = headers["webhook-signature"].split(" ")
    timestamp = headers["webhook-timestamp"]
    assert entries == [
        spec_signature(new, EVENT_ID, timestamp, BODY),
        spec_signature(old, EVENT_ID, timestamp, BODY),
    ]
    # A receiver that still holds the old secret and one that has the new both accept.
    signing.verify_standard(new, headers, BODY)
    signing.verify_standard(old, headers, BODY)
    with pytest.raises(signing.InvalidSignature):
        signing.verify_standard(signing.generate_secret(), headers, BODY)
    # The hex header has room for one signature: the current secret's.
    assert headers["X-Webhook-Signature"] == hex_hmac(new, BODY)


def test_rotation_verified_by_standardwebhooks_package():
    standardwebhooks = pytest.importorskip("standardwebhooks")
    new, old = signing.generate_secret(), signing.generate_secret()
    webhook = make_webhook(
        secret=new,
        previous_secret=old,
        previous_secret_expires_at=timezone.now() + datetime.timedelta(hours=1),
    )
    headers = send(webhook, BODY).headers
    for secret in (new, old):
        assert standardwebhooks.Webhook(secret).verify(BODY, headers) == json.loads(BODY)
