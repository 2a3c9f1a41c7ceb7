"""How fast do the admin's list pages open with 1,000,000 deliveries?

Fills a fresh SQLite database (the benchmark settings) with ``--deliveries`` deliveries (half
as many events, two webhooks each, one of them always the first, the big customer; spread over
30 days: 90 % succeeded, 6 % failed, 3 % pending, 1 % skipped) using raw ``executemany`` in
chunks, then opens each page with the Django test client, logged in as a superuser, and
reports the median of ``--rounds`` requests. Each delivery that had an attempt gets its last one.

    .venv/bin/python bench/admin_lists.py                       # 1,000,000 deliveries
    .venv/bin/python bench/admin_lists.py --deliveries 100000 --rounds 3
    .venv/bin/python bench/admin_lists.py --db /tmp/x.sqlite3   # reuse a filled database
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine_info, make_workdir, setup_django

WEBHOOKS = 20
CHUNK = 50_000
EVENT_NAMES = ["create", "update", "update", "update", "delete", "backup.complete"]
MODELS = ["article", "article", "invoice", "account"]


def fill(deliveries: int, seed: int = 7) -> None:
    from django.db import connection, transaction

    from webhooks_app.models import Webhook

    rng = random.Random(seed)
    hooks = [
        Webhook.objects.create(name=f"customer {i}", url=f"https://customer{i}.example.com/hooks")
        for i in range(WEBHOOKS)
    ]
    hook_ids = [hook.pk for hook in hooks]
    now = datetime.datetime.now(datetime.UTC)
    span = 30 * 24 * 3600
    events = deliveries // 2
    event_sql = (
        "INSERT INTO webhooks_app_event (id, name, model, object_id, body, created_at, "
        "pending_fanout) VALUES (%s, %s, %s, %s, %s, %s, FALSE)"
    )
    delivery_sql = (
        "INSERT INTO webhooks_app_delivery (event_id, webhook_id, status, attempts, "
        "max_attempts, next_attempt_at, next_trigger, lease_token, last_attempt_at, "
        "last_status_code, last_error, completed_at, created_at, event_name, event_model, "
        "last_duration_ms, lane) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, '', %s, %s, %s, %s, %s, %s, %s, %s, %s)"
    )
    # The last attempt of each delivery that had one (what the webhook page's chart reads).
    attempt_sql = (
        "INSERT INTO webhooks_app_deliveryattempt (delivery_id, webhook_id, number, trigger, "
        "outcome, started_at, duration_ms, request_method, request_url, request_headers, "
        "response_status, response_headers, response_body, error_class, error_message, summary) "
        "VALUES (%s, %s, %s, 'automatic', %s, %s, %s, 'POST', '', '{}', %s, '{}', '', '', '', '')"
    )
    outcomes = {"succeeded": "succeeded", "failed": "failed", "pending": "retrying"}
    # A fresh database numbers the deliveries 1, 2, ... in insertion order.
    delivery_id = 0
    start = time.perf_counter()
    done = 0
    while done < events:
        event_rows, delivery_rows, attempt_rows = [], [], []
        for i in range(done, min(events, done + CHUNK // 2)):
            # Ascending in i, so ids and created_at grow together as in production.
            created = now - datetime.timedelta(seconds=span * (1 - i / events))
            event_id = f"evt_{i:032x}"
            name, model = rng.choice(EVENT_NAMES), rng.choice(MODELS)
            object_id = str(rng.randrange(1, 200_000))
            body = json.dumps({"id": event_id, "event": name, "model": model, "data": {"id": 1}})
            event_rows.append((event_id, name, model, object_id, body, created))
            # The first webhook is the big customer: every event goes to it (half the rows).
            for hook_id in (hook_ids[0], rng.choice(hook_ids[1:])):
                roll = rng.random()
                if roll < 0.90:
                    row = ("succeeded", 1, None, 200, "", created)
                elif roll < 0.96:
                    code = rng.choice([500, 502, 404, None])
                    error = "" if code else "ConnectionError: refused"
                    row = ("failed", 4, None, code, error, created)
                elif roll < 0.99:
                    row = ("pending", 1, created + datetime.timedelta(minutes=5), 503, "", None)
                else:
                    row = ("skipped", 0, None, None, "", created)
                status, attempts, next_at, code, error, completed = row
                duration = int(rng.lognormvariate(4, 0.8)) if attempts else None
                delivery_id += 1
                if attempts:
                    attempt_rows.append(
                        (delivery_id, hook_id, attempts, outcomes[status], created, duration, code)
                    )
                delivery_rows.append(
                    (
                        event_id,
                        hook_id,
                        status,
                        attempts,
                        4,
                        next_at,
                        "automatic",
                        created if attempts else None,
                        code,
                        error,
                        completed,
                        created,
                        name,
                        model,
                        duration,
                        "retry" if attempts > 1 else "first",
                    )
                )
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.executemany(event_sql, event_rows)
            cursor.executemany(delivery_sql, delivery_rows)
            cursor.executemany(attempt_sql, attempt_rows)
        done += len(event_rows)
        print(f"\r  {done * 2:,} deliveries", end="", file=sys.stderr, flush=True)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    print(
        f"\r  inserted {done * 2:,} deliveries in {time.perf_counter() - start:.1f}s",
        file=sys.stderr,
    )


def pages() -> list[tuple[str, str]]:
    from webhooks_app.models import Delivery, Event, Webhook

    hook = Webhook.objects.order_by("pk").first()
    some = Delivery.objects.order_by("-id").select_related("event").first()
    assert hook is not None
    assert some is not None
    newest = Event.objects.order_by("-created_at").values_list("pk", flat=True).first()
    week_ago = (datetime.date.today() - datetime.timedelta(days=7)).isoformat()
    tomorrow = (datetime.date.today() + datetime.timedelta(days=1)).isoformat()
    d = "/admin/webhooks_app/delivery/"
    e = "/admin/webhooks_app/event/"
    return [
        ("deliveries", d),
        ("deliveries, page 50", d + "?p=50"),
        ("deliveries ?status=failed", d + "?status__exact=failed"),
        ("deliveries ?status=pending", d + "?status__exact=pending"),
        ("deliveries ?webhook", d + f"?webhook__id__exact={hook.pk}"),
        (
            "deliveries ?webhook&status=failed",
            d + f"?webhook__id__exact={hook.pk}&status__exact=failed",
        ),
        ("deliveries ?event_name=delete", d + "?event_name=delete"),
        ("deliveries ?event_name=backup.complete", d + "?event_name=backup.complete"),
        ("deliveries ?event_name=report.ready (none)", d + "?event_name=report.ready"),
        ("deliveries ?model=account", d + "?model=account"),
        ("deliveries ?code=5xx", d + "?code=5xx"),
        ("deliveries ?code=4xx", d + "?code=4xx"),
        ("deliveries ?code=none", d + "?code=none"),
        (
            "deliveries ?created_at=past 7 days",
            d + f"?created_at__gte={week_ago}&created_at__lt={tomorrow}",
        ),
        (
            "deliveries ?status=failed&code=5xx&event_name=update",
            d + "?status__exact=failed&code=5xx&event_name=update",
        ),
        ("deliveries ?q=<event id>", d + f"?q={some.event_id}"),
        ("deliveries ?q=<object id>", d + f"?q={some.event.object_id}"),
        ("deliveries ?q=<url fragment>", d + "?q=customer3.example"),
        ("delivery detail", d + f"{some.pk}/change/"),
        ("events", e),
        ("events ?name=delete", e + "?name=delete"),
        ("events ?model=account", e + "?model=account"),
        ("events ?q=<object id>", e + f"?q={some.event.object_id}"),
        (
            "event detail",
            e + f"{newest}/change/",
        ),
        ("webhooks (success rate 24 h)", "/admin/webhooks_app/webhook/"),
        ("webhook detail (activity 24 h)", f"/admin/webhooks_app/webhook/{hook.pk}/change/"),
        (
            "webhook detail (activity 7 d)",
            f"/admin/webhooks_app/webhook/{hook.pk}/change/?window=7d",
        ),
        ("health (24 h)", "/admin/webhooks_app/deliveryhealth/"),
        ("health (7 d)", "/admin/webhooks_app/deliveryhealth/?window=7d"),
    ]


def measure(rounds: int) -> list[tuple[str, float, int]]:
    from django.contrib.auth import get_user_model
    from django.test import Client

    user, _ = get_user_model().objects.get_or_create(
        username="bench", defaults={"is_staff": True, "is_superuser": True}
    )
    client = Client()
    client.force_login(user)
    results = []
    for label, url in pages():
        timings = []
        status = 0
        for _ in range(rounds + 1):  # the first request warms caches and is not counted
            start = time.perf_counter()
            response = client.get(url)
            timings.append(time.perf_counter() - start)
            status = response.status_code
        results.append((label, statistics.median(timings[1:]) * 1000, status))
        print(f"  {label:<55} {results[-1][1]:8.1f} ms  HTTP {status}", file=sys.stderr)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--deliveries", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--db", type=Path, help="reuse (or create and keep) this SQLite file")
    args = parser.parse_args()

    if args.db:
        # setup_django() names its file bench.sqlite3 in a new directory; keep the caller's.
        fresh = not args.db.exists()
        os.environ["WEBHOOKS_BENCH_DB"] = str(args.db)
        os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
        import django
        from django.core.management import call_command

        django.setup()
        call_command("migrate", verbosity=0, interactive=False)
        db_path = args.db
    else:
        fresh = True
        db_path = setup_django(make_workdir())
    print(f"database: {db_path}", file=sys.stderr)

    from webhooks_app.models import Delivery

    if fresh or not Delivery.objects.exists():
        fill(args.deliveries)
    total = Delivery.objects.count()
    print(f"measuring with {total:,} deliveries, median of {args.rounds}", file=sys.stderr)
    results = measure(args.rounds)
    print(
        f"\n{total:,} deliveries, median of {args.rounds} requests, {machine_info()['python']}"
        f" / Django {machine_info()['django']}, {machine_info()['nproc']} CPUs\n"
    )
    print("| page | ms | status |\n| --- | ---: | --- |")
    for label, ms, status in results:
        print(f"| {label} | {ms:.0f} | {status} |")
    return 0 if all(status == 200 for _, _, status in results) else 1


if __name__ == "__main__":
    sys.exit(main())
