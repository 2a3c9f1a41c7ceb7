"""Slow receivers and idle workers: requests in flight, commit-to-receipt latency, and a stop
while requests are out.

On the configuration the environment selects (see bench/throughput.py), with a real qcluster
(2 workers) and the benchmark receiver:

* ``latency_200ms_rate``: the receiver answers every request after 200 ms; 2,000 events are
  committed in one transaction (so the writer's own pace is not what is measured);
  deliveries/s from the commit to the last request.
  The webhook's ``max_in_flight`` is 500 (the default, 50, would cap one endpoint at
  250/s at this latency: ``rate = max_in_flight / latency``); each worker keeps up to
  ``MAX_IN_FLIGHT`` (200) requests out.
* ``commit_to_receipt_p50_ms`` / ``_p99_ms``: 100 events a second for 30 s, each its own
  transaction, workers otherwise idle; from each commit to its request's arrival.
* ``graceful_stop_busy_seconds``: 600 events to the 200 ms receiver; once 100 arrived the
  cluster gets SIGTERM; seconds until it exited. Then a new cluster finishes the rest, and
  every event must have arrived, with every attempt that was made recorded.

    .venv/bin/python bench/latency.py
    .venv/bin/python bench/latency.py --quick
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import make_workdir, setup_django
from bench.harness import (
    Cluster,
    create_articles,
    figure,
    quiet_down,
    wait_settled,
    write_figures,
)
from bench.receiver import ReceiverProcess

SLOW_PATH = "/delay/200/slow"
FAST_PATH = "/fast"


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))
    return ordered[index]


def slow_receiver_rate(receiver: ReceiverProcess, n: int) -> dict[str, Any]:
    from webhooks_app.models import Webhook

    quiet_down()
    Webhook.objects.create(name="slow", url=receiver.base_url + SLOW_PATH, max_in_flight=500)
    commits = create_articles(n, n, "slow")
    stats = receiver.wait_for_path(SLOW_PATH, n, timeout=120)
    seconds = float(stats["last_at"]) - commits[0]
    rate = n / seconds
    print(f"[200 ms receiver] {n} deliveries in {seconds:.2f} s: {rate:,.0f}/s", flush=True)
    return {"rate": rate, "seconds": seconds, "distinct": stats["distinct_ids"]}


def commit_to_receipt(receiver: ReceiverProcess, per_second: int, seconds: float) -> list[float]:
    from webhooks_app.models import Event, Webhook

    quiet_down()
    Webhook.objects.create(name="fast", url=receiver.base_url + FAST_PATH)
    time.sleep(1.5)  # every process's copy of the subscriptions has the new webhook
    count = int(per_second * seconds)
    before = Event.objects.count()
    commits = create_articles(count, 1, "latency", pace=1 / per_second)
    stats = receiver.wait_for_path(FAST_PATH, count, timeout=60, arrivals=True)
    arrived = {webhook_id: at for webhook_id, at in stats["arrivals"]}
    events = list(
        Event.objects.order_by("created_at").values_list("id", flat=True)[before : before + count]
    )
    latencies = [
        (arrived[event_id] - committed) * 1000
        for event_id, committed in zip(events, commits, strict=True)
        if event_id in arrived
    ]
    if len(latencies) != count:
        raise SystemExit(f"FAIL: {count - len(latencies)} events did not arrive")
    return latencies


def busy_stop(
    receiver: ReceiverProcess, cluster: Cluster, db_name: str, workdir: Path, n: int
) -> dict[str, Any]:
    from webhooks_app.models import Delivery, DeliveryAttempt, Webhook

    quiet_down()
    path = "/delay/200/stop"
    Webhook.objects.create(name="stop", url=receiver.base_url + path, max_in_flight=500)
    time.sleep(1.5)
    create_articles(n, 100, "stop")
    receiver.wait_for_path(path, min(100, n), timeout=60)
    stop_seconds = cluster.stop()
    in_db = Delivery.objects.filter(webhook__name="stop")
    print(
        f"[busy stop] SIGTERM with requests in flight: stopped in {stop_seconds:.1f} s; "
        f"{in_db.filter(status='succeeded').count()} of {n} recorded",
        flush=True,
    )
    restarted = Cluster(db_name, workdir / "qcluster-2.log")
    try:
        stats = receiver.wait_for_path(path, n, timeout=120)
        settled = wait_settled(Delivery.objects.count(), 60)
    finally:
        restarted.stop()
    attempts = DeliveryAttempt.objects.filter(delivery__webhook__name="stop").count()
    return {
        "stop_seconds": stop_seconds,
        "received": stats["count"],
        "distinct": stats["distinct_ids"],
        "attempts_recorded": attempts,
        "settled": settled,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="Slow receivers and commit-to-receipt latency.")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    n, seconds = (300, 5.0) if args.quick else (args.n, args.seconds)
    workdir = make_workdir()
    db_name = setup_django(workdir)
    problems: list[str] = []
    with ReceiverProcess() as receiver:
        cluster = Cluster(db_name, workdir / "qcluster.log")
        try:
            from webhooks_app.models import Webhook

            Webhook.objects.create(name="warm", url=receiver.base_url + "/warm")
            create_articles(20, 1, "warm")
            receiver.wait_for_path("/warm", 20, timeout=60)
            slow = slow_receiver_rate(receiver, n)
            latencies = commit_to_receipt(receiver, 100, seconds)
            p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
            print(
                f"[commit to receipt] {len(latencies)} events at 100/s: p50 {p50:.1f} ms, "
                f"p99 {p99:.1f} ms, max {max(latencies):.1f} ms",
                flush=True,
            )
            stop = busy_stop(receiver, cluster, db_name, workdir, 600 if not args.quick else 200)
        finally:
            cluster.stop()
    if slow["distinct"] != n:
        problems.append(f"200 ms receiver: {slow['distinct']} distinct of {n}")
    expected_stop = 600 if not args.quick else 200
    if stop["distinct"] != expected_stop:
        problems.append(f"busy stop: {stop['distinct']} distinct of {expected_stop} arrived")
    if stop["attempts_recorded"] < stop["received"]:
        problems.append(
            f"busy stop: {stop['received']} requests arrived, {stop['attempts_recorded']} recorded"
        )
    figures = [
        figure(
            "latency_200ms_rate",
            slow["rate"],
            "deliveries/s",
            n=n,
            receiver_latency_ms=200,
            webhook_max_in_flight=500,
        ),
        figure(
            "commit_to_receipt_p50_ms",
            p50,
            "ms",
            events=len(latencies),
            per_second=100,
            mean_ms=round(statistics.mean(latencies), 1),
        ),
        figure("commit_to_receipt_p99_ms", p99, "ms", max_ms=round(max(latencies), 1)),
        figure(
            "graceful_stop_busy_seconds",
            stop["stop_seconds"],
            "s",
            in_flight_at_stop="up to 400 (2 workers x MAX_IN_FLIGHT 200) at 200 ms each",
            received=stop["received"],
            attempts_recorded=stop["attempts_recorded"],
        ),
    ]
    write_figures(args.json, figures, problems=problems, workdir=str(workdir))
    if problems:
        print("FAIL: " + "; ".join(problems), flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
