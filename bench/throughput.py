"""End to end: model saves -> outbox -> a real qcluster -> HTTP 200, against a raw loop.

One run, on the configuration the environment selects (``embedded``: SQLite + ORM broker;
``postgres_redis`` when .ci/integration.sh started the servers):

1. migrates a fresh database, starts the receiver (its own process, asyncio) and a real
   ``manage.py qcluster`` (``bench.settings``, 2 workers), creates one Webhook, warms up;
2. ``e2e_txn100``: N ``Article`` creates in transactions of 100 saves;
   ``e2e_autocommit``: N creates, each its own transaction;
   deliveries/s = N / (last request received - first commit);
3. the reference, in the same round: as many processes as the cluster has workers, each a
   plain ``requests.Session`` loop, POST N bodies of the same size to the same receiver
   (the cluster idles meanwhile);
4. repeats 2-3 ``--rounds`` times (the machine is shared: single runs move by ±20%) and
   reports the median ratio; then stops the cluster (SIGTERM; the seconds it took are
   ``graceful_stop_idle_seconds``).

Checks: N requests with N distinct ``webhook-id`` values per variant (none lost, none twice),
every Delivery row ``succeeded``; exits 1 otherwise.

    .venv/bin/python bench/throughput.py            # N=2000
    .venv/bin/python bench/throughput.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine_info, make_workdir, setup_django
from bench.harness import (
    Cluster,
    create_articles,
    event_body_sample,
    figure,
    raw_loop,
    wait_settled,
    write_figures,
)
from bench.receiver import ReceiverProcess

WAIT_SECONDS = 180.0
# After the last expected request, wait this long for a late duplicate before counting.
DUPLICATE_GRACE_SECONDS = 1.5


def run_variant(receiver: ReceiverProcess, name: str, n: int, txn_size: int) -> dict[str, Any]:
    receiver.reset()
    start = time.time()
    commits = create_articles(n, txn_size, name)
    try:
        receiver.wait_for(n, timeout=WAIT_SECONDS)
    except TimeoutError as exc:
        raise SystemExit(f"FAIL [{name}]: {exc}") from exc
    time.sleep(DUPLICATE_GRACE_SECONDS)
    stats = receiver.stats()
    seconds = float(stats["last_at"]) - commits[0]
    result = {
        "variant": name,
        "n": n,
        "txn_size": txn_size,
        "received": stats["count"],
        "distinct_ids": stats["distinct_ids"],
        "write_seconds": commits[-1] - start,
        "seconds_from_first_commit": seconds,
        "lag_after_last_commit": float(stats["last_at"]) - commits[-1],
        "deliveries_per_s": n / seconds,
    }
    print(
        f"[{name:>14}] {n} saves written in {result['write_seconds']:.2f} s; "
        f"{stats['count']} received ({stats['distinct_ids']} distinct) in {seconds:.2f} s "
        f"from the first commit: {result['deliveries_per_s']:,.0f} deliveries/s (last "
        f"{result['lag_after_last_commit']:.2f} s after the last commit)",
        flush=True,
    )
    return result


def run(n: int, rounds: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    workdir = make_workdir()
    db_name = setup_django(workdir)

    from django.conf import settings

    from webhooks_app.models import Delivery, DeliveryStatus, Webhook

    workers = int(settings.Q_CLUSTER["workers"])
    info: dict[str, Any] = {"n": n, "workers": workers, "machine": machine_info()}
    problems: list[str] = []
    ratios: dict[str, list[float]] = {"e2e_txn100": [], "e2e_autocommit": []}
    rates: dict[str, list[float]] = {"e2e_txn100": [], "e2e_autocommit": [], "raw": []}
    expected = min(20, n)
    with ReceiverProcess() as receiver:
        Webhook.objects.create(name="bench", url=receiver.url)
        cluster = Cluster(db_name, workdir / "qcluster.log")
        try:
            run_variant(receiver, "warmup", min(20, n), 1)
            body = event_body_sample()
            for round_no in range(rounds):
                print(f"--- round {round_no + 1} of {rounds}", flush=True)
                for name, txn_size in (("e2e_txn100", 100), ("e2e_autocommit", 1)):
                    variant = run_variant(receiver, name, n, txn_size)
                    expected += n
                    if variant["received"] != n or variant["distinct_ids"] != n:
                        problems.append(
                            f"{name}: received {variant['received']} "
                            f"({variant['distinct_ids']} distinct), expected {n}"
                        )
                    rates[name].append(variant["deliveries_per_s"])
                raw = raw_loop(receiver.url, n, workers, body)
                rates["raw"].append(raw)
                print(f"[raw loop x{workers}] {raw:,.0f} req/s over {workers} processes")
                for name in ratios:
                    ratios[name].append(rates[name][-1] / raw)
            settled = wait_settled(expected, 60)
        finally:
            stop_seconds = cluster.stop()
        print(f"cluster stopped in {stop_seconds:.1f} s (idle, SIGTERM)", flush=True)

    not_ok = Delivery.objects.exclude(status=DeliveryStatus.SUCCEEDED).count()
    if not_ok:
        problems.append(f"{not_ok} Delivery rows are not succeeded ({settled} settled)")
    figures = [
        figure(
            f"{name}_ratio",
            statistics.median(ratios[name]),
            "ratio",
            deliveries_per_s=round(statistics.median(rates[name]), 1),
            raw_req_per_s=round(statistics.median(rates["raw"]), 1),
            ratios=[round(value, 3) for value in ratios[name]],
            raw_processes=workers,
            n=n,
            rounds=rounds,
        )
        for name in ("e2e_autocommit", "e2e_txn100")
    ]
    figures.append(figure("graceful_stop_idle_seconds", stop_seconds, "s", workers=workers))
    info["problems"] = problems
    info["workdir"] = str(workdir)
    return figures, info


def main() -> None:
    parser = argparse.ArgumentParser(description="End-to-end webhook delivery throughput.")
    parser.add_argument("--n", type=int, default=2000, help="events per variant (default 2000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; the median is reported")
    parser.add_argument("--quick", action="store_true", help="smoke run: --n 300, 1 round")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    figures, info = run(300 if args.quick else args.n, 1 if args.quick else args.rounds)
    write_figures(args.json, figures, **info)
    if info["problems"]:
        print("FAIL: " + "; ".join(info["problems"]), flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
