"""What a dead endpoint's backlog costs the claims of everyone else (holds.py).

In-process, no HTTP: two webhooks, one whose requests are all out and never come back (at
its cap, 50, from the first claim on: a dead endpoint), one whose claimed rows are marked
answered after every claim. Events arrive 200 per transaction, each batch followed by a
claim. Measured at two sizes of the stream (``--events`` / 10, and ``--events``), once
every event is fanned out: how many rows the dead endpoint has, and how long the walk of
the due rows that every sweep (once a second a run, under the claim lock) makes takes,
leaving the dead endpoint's rows out.

* ``held_backlog_walk_growth``: the walk at the larger size ÷ at the smaller. About 1 when
  the dead endpoint's backlog waits as events; about the sizes' ratio (10) when it is rows
  at the head of the due index.

    .venv/bin/python bench/held_backlog.py                  # 2,000 and 20,000 events
    .venv/bin/python bench/held_backlog.py --events 100000
    .venv/bin/python bench/held_backlog.py --quick          # 200 and 2,000
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import make_workdir, setup_django
from bench.harness import figure, write_figures

BATCH = 200


def main() -> None:
    parser = argparse.ArgumentParser(description="A dead endpoint's backlog and the sweeps.")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--quick", action="store_true", help="2,000 events")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.quick:
        args.events = 2_000
    workdir = make_workdir()
    setup_django(workdir)

    from django.db import transaction
    from django.utils import timezone

    from webhooks_app import claims, sql
    from webhooks_app.events import record
    from webhooks_app.models import Delivery, Event, Lane, Webhook

    answering = Webhook.objects.create(name="answering", url="http://127.0.0.1:9/answering")
    dead = Webhook.objects.create(name="dead", url="http://127.0.0.1:9/dead")
    copy = {webhook.pk: webhook for webhook in (answering, dead)}

    def claim() -> None:
        claims.claim(
            "bench",
            claims.Capacity(total=200, retry=100),
            using="default",
            fan_out_limit=BATCH,
            webhooks=copy,
        )
        answered = Delivery.objects.filter(webhook=answering, lease_token__gt="")
        answered.update(status="succeeded", lease_token="", next_attempt_at=None)

    def walk_ms() -> float:
        times = []
        for _ in range(20):
            started = time.perf_counter()
            sql.due_rows("default", timezone.now(), Lane.FIRST, 100, skip_webhooks=[dead.pk])
            times.append((time.perf_counter() - started) * 1000)
        return statistics.median(times)

    sizes = [args.events // 10, args.events]
    measured: dict[int, tuple[int, float]] = {}
    written = 0
    for size in sizes:
        while written < size:
            with transaction.atomic():
                for number in range(BATCH):
                    record("create", data={"id": written + number}, model="tests.article")
            written += BATCH
            claim()
        while Event.objects.filter(pending_fanout=True).exists():
            claim()
        rows = Delivery.objects.filter(webhook=dead).count()
        measured[size] = (rows, walk_ms())
        print(
            f"[held backlog] {size:,} events: the dead endpoint has {rows:,} rows; "
            f"the due walk past them takes {measured[size][1]:.2f} ms",
            flush=True,
        )
    small, large = (measured[size] for size in sizes)
    write_figures(
        args.json,
        [
            figure(
                "held_backlog_walk_growth",
                large[1] / small[1],
                "ratio",
                events=sizes,
                dead_endpoint_rows=[small[0], large[0]],
                walk_ms=[round(small[1], 2), round(large[1], 2)],
            )
        ],
    )


if __name__ == "__main__":
    main()
