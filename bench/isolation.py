"""One endpoint must not slow another, and a rate limit must hold.

On the configuration the environment selects (see bench/throughput.py), with a real qcluster
(2 workers) and the benchmark receiver:

* ``isolation_ratio``: N events, each to a fast endpoint and to one that never answers (its
  requests end at the 5 s timeout); the fast endpoint's deliveries/s, from the first commit
  to its last request, divided by the same run without the hanging endpoint. N = 6,000
  makes each half last ~9 s, so the hanging endpoint's first requests time out (and are
  recorded, and its held events released to it) while the fast one is measured; at the
  earlier N = 2,000 a half ended before any timeout, and one round's ratio had a standard
  deviation of 0.16 against 0.06 (nine rounds; docs/benchmarks.md). With
  ``--second fast`` or ``--second disabled`` the second endpoint answers at once, or is a
  disabled webhook (its rows are made, as skipped, and never sent): what a second subscriber
  costs by itself, to read the figure against.
* ``rate_limit_error``: an endpoint limited to 5 requests/s gets 100 events at once; the rate
  its requests arrived at ((n - 1) / (last - first)) divided by 5.

    .venv/bin/python bench/isolation.py
    .venv/bin/python bench/isolation.py --quick
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import make_workdir, setup_django
from bench.harness import Cluster, create_articles, figure, quiet_down, write_figures
from bench.receiver import ReceiverProcess


def fast_rate(
    receiver: ReceiverProcess, n: int, tag: str, with_hanging: bool, second: str = "hang"
) -> float:
    from webhooks_app.models import Webhook

    quiet_down()
    fast_path = f"/fast/{tag}"
    Webhook.objects.create(name=f"fast {tag}", url=receiver.base_url + fast_path)
    if with_hanging:
        Webhook.objects.create(
            name=f"{second} {tag}",
            url=receiver.base_url + f"/{second}/{tag}",
            # Still subscribed: its rows are made (skipped), and none is ever sent.
            is_active=second != "disabled",
        )
    time.sleep(1.5)  # every process's copy of the subscriptions has the new webhooks
    commits = create_articles(n, 100, tag)
    stats = receiver.wait_for_path(fast_path, n, timeout=120)
    rate = n / (float(stats["last_at"]) - commits[0])
    label = f"next to a {second} endpoint" if with_hanging else "alone"
    print(f"[isolation] fast endpoint {label}: {rate:,.0f} deliveries/s", flush=True)
    return rate


def limited_rate(receiver: ReceiverProcess, count: int, limit: float) -> dict[str, Any]:
    from webhooks_app.models import Webhook

    quiet_down()
    path = "/limited"
    Webhook.objects.create(name="limited", url=receiver.base_url + path, rate_limit=limit)
    time.sleep(1.5)
    create_articles(count, count, "limited")
    stats = receiver.wait_for_path(path, count, timeout=count / limit + 30, arrivals=True)
    times = sorted(at for _, at in stats["arrivals"])
    rate = (len(times) - 1) / (times[-1] - times[0])
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    # The most requests in any one second (a quota is usually counted that way).
    busiest = max(sum(1 for other in times if start <= other < start + 1.0) for start in times)
    print(
        f"[rate limit] {count} requests limited to {limit:g}/s arrived at {rate:.2f}/s "
        f"(smallest gap {min(gaps) * 1000:.0f} ms, at most {busiest} in any second)",
        flush=True,
    )
    return {"rate": rate, "min_gap_ms": min(gaps) * 1000, "busiest_second": busiest}


def main() -> None:
    parser = argparse.ArgumentParser(description="Endpoint isolation and rate limits.")
    parser.add_argument("--n", type=int, default=6000)
    parser.add_argument("--rounds", type=int, default=5, help="isolation rounds (median)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--second",
        choices=["hang", "fast", "disabled"],
        default="hang",
        help="the second endpoint: hanging (the figure), fast too (what a second "
        "subscriber costs by itself), or disabled (only its rows: kept as skipped)",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    n, rounds, limited = (300, 1, 20) if args.quick else (args.n, args.rounds, 100)
    workdir = make_workdir()
    db_name = setup_django(workdir)
    ratios: list[float] = []
    with ReceiverProcess() as receiver:
        cluster = Cluster(db_name, workdir / "qcluster.log")
        try:
            fast_rate(receiver, 20, "warm", with_hanging=False)
            for round_no in range(rounds):
                # Alternating which goes first (alone, beside; beside, alone; ...) cancels
                # the machine's drift between the two halves of a round.
                halves = [("alone", False), ("beside", True)]
                if round_no % 2:
                    halves.reverse()
                rates = {
                    label: fast_rate(
                        receiver, n, f"{label}{round_no}", with_hanging=hanging, second=args.second
                    )
                    for label, hanging in halves
                }
                beside_rate, alone_rate = rates["beside"], rates["alone"]
                ratios.append(beside_rate / alone_rate)
            limit = limited_rate(receiver, limited, 5.0)
        finally:
            cluster.stop()
    figures = [
        figure(
            "isolation_ratio",
            statistics.median(ratios),
            "ratio",
            ratios=[round(value, 3) for value in ratios],
            order="alone first in even rounds, beside first in odd ones",
            n=n,
            second=args.second,
            hanging_endpoint="never answers; 5 s timeout; ENDPOINT_MAX_IN_FLIGHT 50",
        ),
        figure(
            "rate_limit_error",
            limit["rate"] / 5.0,
            "ratio",
            limit_per_s=5,
            deliveries=limited,
            observed_per_s=round(limit["rate"], 3),
            smallest_gap_ms=round(limit["min_gap_ms"], 1),
            most_in_one_second=limit["busiest_second"],
        ),
    ]
    write_figures(args.json, figures, workdir=str(workdir))


if __name__ == "__main__":
    main()
