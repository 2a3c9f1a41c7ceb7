"""A backlog of 100,000 due deliveries, worked through with flat worker memory.

100,000 events are written straight into the outbox (pending fan-out, one subscribed
webhook) while no cluster runs; then a real qcluster (2 workers) works through them against
the fast receiver. Each worker's resident memory is read from /proc after the first 5,000
deliveries (imports, pools and caches in place) and again at the end; ``backlog_rss_growth``
is the larger worker's end / start. The rate over the whole backlog is reported with it.

    .venv/bin/python bench/backlog.py            # 100,000 rows
    .venv/bin/python bench/backlog.py --quick    # 10,000 rows
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import make_workdir, setup_django
from bench.harness import Cluster, figure, rss_kib, write_figures
from bench.receiver import ReceiverProcess

WARM = 5_000


def fill(n: int) -> None:
    """Events as emit() records them, written in bulk (the writer is not what is measured)."""
    from django.db import transaction
    from django.utils import timezone

    from webhooks_app.events import format_timestamp
    from webhooks_app.ids import new_event_id
    from webhooks_app.models import Event
    from webhooks_app.serialization import dumps

    now = timezone.now()
    for start in range(0, n, 5_000):
        rows = []
        for i in range(start, min(n, start + 5_000)):
            event_id = new_event_id()
            envelope = {
                "id": event_id,
                "event": "create",
                "model": "article",
                "timestamp": format_timestamp(now),
                "data": {"id": i, "title": f"backlog {i}", "body": "benchmark body " * 8},
                "previous": None,
                "changed_fields": None,
                "user": None,
            }
            rows.append(
                Event(
                    id=event_id,
                    name="create",
                    model="article",
                    object_id=str(i),
                    body=dumps(envelope),
                    created_at=now,
                    pending_fanout=True,
                )
            )
        with transaction.atomic():
            Event.objects.bulk_create(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description="Worker memory over a large backlog.")
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="10,000 rows")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    n = 10_000 if args.quick else args.n
    workdir = make_workdir()
    db_name = setup_django(workdir)

    from webhooks_app.models import Webhook

    with ReceiverProcess() as receiver:
        Webhook.objects.create(name="backlog", url=receiver.base_url + "/backlog")
        started = time.monotonic()
        fill(n)
        print(f"{n:,} events written in {time.monotonic() - started:.1f} s", flush=True)
        cluster = Cluster(db_name, workdir / "qcluster.log")
        try:
            start = time.time()
            receiver.wait_for_path("/backlog", min(WARM, n // 4), timeout=600)
            before = {pid: rss_kib(pid) for pid in cluster.worker_pids()}
            stats = receiver.wait_for_path("/backlog", n, timeout=1800)
            after = {pid: rss_kib(pid) for pid in cluster.worker_pids()}
        finally:
            cluster.stop()
    seconds = float(stats["last_at"]) - start
    growth = max(after[pid] / before[pid] for pid in before if pid in after and before[pid])
    print(
        f"{stats['count']:,} delivered ({stats['distinct_ids']:,} distinct) in {seconds:.1f} s "
        f"({n / seconds:,.0f}/s); worker RSS KiB before {sorted(before.values())}, "
        f"after {sorted(after.values())}: growth {growth:.3f}",
        flush=True,
    )
    figures = [
        figure(
            "backlog_rss_growth",
            growth,
            "ratio",
            rows=n,
            rss_kib_after_warmup=sorted(before.values()),
            rss_kib_at_end=sorted(after.values()),
            deliveries_per_s=round(n / seconds, 1),
        )
    ]
    problems = [] if stats["distinct_ids"] == n else [f"{stats['distinct_ids']} of {n} arrived"]
    write_figures(args.json, figures, problems=problems, workdir=str(workdir))
    if problems:
        print("FAIL: " + "; ".join(problems), flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
