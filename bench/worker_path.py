"""The worker's own cost per delivery, without django-q2: one engine run in-process.

N events are recorded as the write path records them (in transactions of 100 saves, nobody
consuming the queue); then one ``engine.Run`` (what a worker's task runs) fans them out,
claims, sends and records them against the fast receiver in its own process. Comparing with
``throughput.py`` separates what the engine costs from what the queue adds. ``--profile``
prints where the run's thread spends its time (cProfile, cumulative and own time).

    .venv/bin/python bench/worker_path.py --n 2000
    .venv/bin/python bench/worker_path.py --n 2000 --profile
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import make_workdir, setup_django
from bench.harness import create_articles, figure, write_figures
from bench.receiver import ReceiverProcess


def run(n: int, profile: bool, max_in_flight: int | None) -> dict[str, Any]:
    setup_django(make_workdir())

    from webhooks_app import engine
    from webhooks_app.models import Delivery, DeliveryStatus, Webhook

    with ReceiverProcess() as receiver:
        Webhook.objects.create(name="bench", url=receiver.url, max_in_flight=max_in_flight)
        create_articles(50, 50, "warm")
        engine.Run(budget=60, linger=0).run()
        receiver.reset()
        create_articles(n, 100, "bench")
        profiler = cProfile.Profile() if profile else None
        start = time.perf_counter()
        if profiler:
            profiler.enable()
        settled = engine.Run(budget=600, linger=0).run()
        if profiler:
            profiler.disable()
        seconds = time.perf_counter() - start
        stats = receiver.stats()
    ok = Delivery.objects.filter(status=DeliveryStatus.SUCCEEDED).count()
    result = {
        "n": n,
        "settled": settled,
        "received": stats["count"],
        "succeeded": ok,
        "seconds": seconds,
        "us_per_delivery": seconds / n * 1e6,
        "deliveries_per_s": n / seconds,
    }
    print(
        f"one engine run: {n} deliveries in {seconds:.2f} s = {result['deliveries_per_s']:,.0f}/s "
        f"({result['us_per_delivery']:,.0f} µs each); {stats['count']} received, {ok} succeeded",
        flush=True,
    )
    if profiler:
        for order in ("cumulative", "tottime"):
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats(order).print_stats(30)
            print(out.getvalue())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description="An engine run's cost per delivery.")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--max-in-flight", type=int, help="the webhook's own cap")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = run(args.n, args.profile, args.max_in_flight)
    figures = [
        figure(
            "worker_deliveries_per_s",
            result["deliveries_per_s"],
            "deliveries/s",
            us_per_delivery=round(result["us_per_delivery"], 1),
            n=args.n,
        )
    ]
    write_figures(args.json, figures, **result)


if __name__ == "__main__":
    main()
