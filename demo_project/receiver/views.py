"""The demo's receiver: two endpoints that check signatures like a third party, and a log page."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from .models import ReceivedWebhook, ReceiverSwitch, Slot
from .verification import check_scalar, check_standard

# Short enough to watch the retries recover: with RETRY_SCHEDULE [5, 30, 120] the first
# attempt and the 5-second retry fail, the one about 35 seconds in lands.
FAIL_SECONDS = 20
LOG_LENGTH = 100


def _envelope_fields(body: bytes) -> tuple[str, str, str]:
    """The id, event and model of a payload, or blanks: a rejected request may not be JSON."""
    try:
        payload: Any = json.loads(body)
    except ValueError:
        return "", "", ""
    if not isinstance(payload, dict):
        return "", "", ""
    event_id, event, model = (str(payload.get(key) or "")[:100] for key in ("id", "event", "model"))
    return event_id, event, model


@csrf_exempt
@require_POST
def receive(request: HttpRequest, slot: str) -> HttpResponse:
    # The raw bytes, never a re-serialised json.loads(): a signature covers exact bytes.
    body = request.body
    secret = settings.DEMO_RECEIVER_SECRETS[slot]
    if slot == Slot.STANDARD:
        error = check_standard(secret, request.headers, body)
    else:
        error = check_scalar(secret, request.headers.get("X-Scalar-Signature"), body)

    answer: dict[str, Any]
    if error:
        status, answer = 401, {"error": "Invalid signature"}
    elif ReceiverSwitch.get().is_failing():
        status, answer = 500, {"error": "Failing on purpose (demo switch)"}
        error = "answered 500 on purpose: the demo's fail switch is on"
    else:
        status, answer = 200, {"success": True}

    event_id, event, model = _envelope_fields(body)
    ReceivedWebhook.objects.create(
        slot=slot,
        event_id=event_id,
        event=event,
        model=model,
        headers=dict(request.headers),
        body=body.decode("utf-8", errors="replace"),
        verified=status != 401,
        status_code=status,
        error=error or "",
    )
    return JsonResponse(answer, status=status)


@require_GET
def log(request: HttpRequest) -> HttpResponse:
    context = {
        "received": ReceivedWebhook.objects.all()[:LOG_LENGTH],
        "switch": ReceiverSwitch.get(),
        "fail_seconds": FAIL_SECONDS,
    }
    return render(request, "receiver/log.html", context)


@require_POST
def switch(request: HttpRequest) -> HttpResponse:
    receiver_switch = ReceiverSwitch.get()
    if request.POST.get("action") == "fail":
        receiver_switch.fail_for(FAIL_SECONDS)
    else:
        receiver_switch.recover()
    return redirect("receiver:log")


@require_POST
def clear(request: HttpRequest) -> HttpResponse:
    ReceivedWebhook.objects.all().delete()
    return redirect("receiver:log")
