"""The worker's own cost per delivery, without django-q2: ``deliver_batch`` called in-process.

Deliveries are created as the write path creates them (transactions of ``--txn-size`` saves,
nothing consuming the queue), then each batch is handed to ``tasks.deliver_batch`` directly,
exactly what a worker would run, against the fast receiver in its own process. Comparing with
``throughput.py`` separates what the task itself costs from what the queue adds (broker
polling, pickling, process hand-off, the dispatcher holding a worker).

    PYTHONPATH=. .venv/bin/python bench/worker_path.py --n 2000
    PYTHONPATH=. .venv/bin/python bench/worker_path.py --n 1000 --profile   # + cProfile top
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import make_workdir, setup_django
from bench.receiver import ReceiverProcess, raw_requests_loop


def grouped_bulk_update(manager: Any, objs: list[Any], fields: list[str], **kwargs: Any) -> int:
    """Prototype of a cheaper ``bulk_update`` for the recorder (``--grouped-update``).

    Django's ``bulk_update`` builds a ``CASE WHEN id=.. THEN ..`` expression per field and
    row; resolving those expressions is most of a flush's cost. A batch's outcomes are nearly
    all alike (succeeded, lease cleared, no error), so rows with equal values are written by
    one ``UPDATE .. WHERE id IN (..)`` each, and only the per-row timestamps go through a
    two-field ``bulk_update``.
    """
    per_row = [f for f in fields if f in ("last_attempt_at", "completed_at")]
    shared = [f for f in fields if f not in per_row]
    groups: dict[tuple[Any, ...], list[int]] = defaultdict(list)
    for obj in objs:
        groups[tuple(getattr(obj, f) for f in shared)].append(obj.pk)
    model = manager.model
    for values, pks in groups.items():
        model._base_manager.filter(pk__in=pks).update(**dict(zip(shared, values, strict=True)))
    if per_row:
        model._base_manager.bulk_update(objs, per_row)
    return len(objs)


def run(n: int, txn_size: int, profile: bool, grouped_update: bool = False) -> dict[str, Any]:
    setup_django(make_workdir())

    from django.db import transaction

    from tests.models import Article
    from webhooks_app import tasks
    from webhooks_app.conf import app_settings
    from webhooks_app.models import Delivery, DeliveryStatus, Event, Webhook

    with ReceiverProcess() as receiver:
        Webhook.objects.create(name="bench", url=receiver.url)
        for start in range(0, n, txn_size):
            with transaction.atomic():
                for i in range(start, min(n, start + txn_size)):
                    Article.objects.create(title=f"w {i}", body="benchmark body " * 8)
        by_token: dict[str, list[int]] = defaultdict(list)
        for pk, token in Delivery.objects.order_by("id").values_list("id", "lease_token"):
            by_token[token].append(pk)
        size = int(app_settings.BATCH_SIZE)
        batches = [
            (ids[i : i + size], token)
            for token, ids in by_token.items()
            for i in range(0, len(ids), size)
        ]

        patcher = None
        if grouped_update:
            patcher = mock.patch.object(type(Delivery.objects), "bulk_update", grouped_bulk_update)
            patcher.start()
        profiler = cProfile.Profile() if profile else None
        start_t = time.perf_counter()
        if profiler:
            profiler.enable()
        for ids, token in batches:
            tasks.deliver_batch(ids, token)
        if profiler:
            profiler.disable()
        elapsed = time.perf_counter() - start_t
        if patcher:
            patcher.stop()
        stats = receiver.wait_for(n, timeout=10)

        events = list(Event.objects.order_by("created_at").values_list("id", "body")[:n])
        receiver.reset()
        raw_s = raw_requests_loop(
            receiver.url, [b.encode() for _, b in events], [str(i) for i, _ in events]
        )

    succeeded = Delivery.objects.filter(status=DeliveryStatus.SUCCEEDED).count()
    result = {
        "n": n,
        "grouped_update": grouped_update,
        "batches": len(batches),
        "batch_size": size,
        "deliveries_per_s": n / elapsed,
        "us_per_delivery": elapsed / n * 1e6,
        "raw_req_per_s": n / raw_s,
        "raw_us_per_request": raw_s / n * 1e6,
        "received": stats["count"],
        "succeeded": succeeded,
    }
    label = " (grouped update)" if grouped_update else ""
    print(
        f"deliver_batch in-process{label}: {n} deliveries in {len(batches)} batches of <= {size}: "
        f"{elapsed:.2f} s = {result['deliveries_per_s']:,.0f}/s "
        f"({result['us_per_delivery']:,.0f} µs each; raw requests loop "
        f"{result['raw_us_per_request']:,.0f} µs each, {result['raw_req_per_s']:,.0f}/s); "
        f"{succeeded} succeeded",
        flush=True,
    )
    if profiler:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(35)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description="Worker-side cost per delivery, no queue.")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--txn-size", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="smoke run: --n 300")
    parser.add_argument("--profile", action="store_true", help="print a cProfile summary")
    parser.add_argument(
        "--grouped-update",
        action="store_true",
        help="prototype: replace the recorder's bulk_update with grouped UPDATEs",
    )
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    results = run(300 if args.quick else args.n, args.txn_size, args.profile, args.grouped_update)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
