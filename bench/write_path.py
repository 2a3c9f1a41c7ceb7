"""What webhooks cost the code that saves a watched model (no cluster running).

In one process and one database, each round times:

* ``create``: M ``Article.objects.create(...)``, each in autocommit;
* ``update``: M ``article.save()`` of those rows with a changed title, each in autocommit;
* ``txn``: 1,000 creates in one transaction;

under three configurations:

* ``disabled``: ``WEBHOOKS["ENABLED"] = False`` (the receivers return at once);
* ``enabled``: one active Webhook subscribed to everything: each save writes an Event
  (the outbox row) and wakes the workers after commit (coalesced: at most one message per
  50 ms per process); an update's ``previous`` and ``changed_fields`` come from what the
  instance was saved with (no query);
* ``no_subscriber``: enabled, but the only Webhook subscribes to another event: the cost of
  asking. (A disabled webhook still receives: its deliveries are kept as skipped.)

Nothing consumes the queue, so events just accumulate, as they would while a cluster is
down. Rounds alternate the configurations so that drift (other processes on the machine, a
growing database) hits all of them alike; the median per round is reported. The figures
``writepath_create_ratio``, ``writepath_update_ratio`` and ``writepath_txn_ratio`` are
enabled / disabled. Each figure also carries the CPU µs per save of this process and (on
PostgreSQL) of its server backend: steadier than wall time on a shared machine, and they
say which side a save's time went to.

    PYTHONPATH=. .venv/bin/python bench/write_path.py            # M=2000, 9 rounds
    PYTHONPATH=. .venv/bin/python bench/write_path.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import make_workdir, setup_django
from bench.harness import figure, write_figures

CONFIGS = ("disabled", "enabled", "no_subscriber")
OPERATIONS = ("create", "update", "txn")
TXN_SIZE = 1000


class CpuClock:
    """CPU time of this process and, on PostgreSQL, of its server backend (read from
    /proc: the server runs on this machine). Wall time on a shared 2-vCPU machine moves by
    ±30 % between rounds; the CPU each side spends per save hardly moves, and says where
    the time of a save goes."""

    def __init__(self) -> None:
        from django.db import connection

        self.backend: int | None = None
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                self.backend = int(cursor.fetchone()[0])

    def read(self) -> tuple[float, float | None]:
        server = None
        if self.backend is not None:
            # utime and stime, fields 14 and 15 of /proc/<pid>/stat (after the command).
            fields = Path(f"/proc/{self.backend}/stat").read_text().rsplit(")", 1)[1].split()
            server = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return time.process_time(), server


def time_creates(m: int, tag: str) -> tuple[float, list[Any]]:
    from tests.models import Article

    start = time.perf_counter()
    articles = [
        Article.objects.create(title=f"{tag} {i}", body="benchmark body " * 8) for i in range(m)
    ]
    return time.perf_counter() - start, articles


def time_updates(articles: list[Any], tag: str) -> float:
    start = time.perf_counter()
    for article in articles:
        article.title = f"{article.title} {tag}"
        article.save()
    return time.perf_counter() - start


def time_transaction(tag: str) -> float:
    from django.db import transaction

    from tests.models import Article

    start = time.perf_counter()
    with transaction.atomic():
        for i in range(TXN_SIZE):
            Article.objects.create(title=f"{tag} {i}", body="benchmark body " * 8)
    return time.perf_counter() - start


def run(m: int, rounds: int) -> dict[str, Any]:
    workdir = make_workdir()
    setup_django(workdir)

    from django.conf import settings
    from django.test import override_settings

    from webhooks_app import subscriptions
    from webhooks_app.models import Event, Webhook

    webhook = Webhook.objects.create(name="bench", url="http://127.0.0.1:9/never-called")
    enabled_settings = dict(settings.WEBHOOKS)
    variants = {
        "disabled": enabled_settings | {"ENABLED": False},
        "enabled": enabled_settings,
        "no_subscriber": enabled_settings,
    }
    samples: dict[str, dict[str, list[float]]] = {
        config: {op: [] for op in OPERATIONS} for config in CONFIGS
    }
    # CPU µs per save of this process ("client") and of the database server ("server").
    cpu: dict[str, dict[str, dict[str, list[float]]]] = {
        side: {config: {op: [] for op in OPERATIONS} for config in CONFIGS}
        for side in ("client", "server")
    }
    clock = CpuClock()

    def on_clock(config: str, op: str, saves: int, work: Any) -> Any:
        client_before, server_before = clock.read()
        result = work()
        client_after, server_after = clock.read()
        cpu["client"][config][op].append((client_after - client_before) / saves * 1e6)
        if server_before is not None and server_after is not None:
            cpu["server"][config][op].append((server_after - server_before) / saves * 1e6)
        return result

    # One untimed pass fills caches (registry, subscriptions sync, prepared statements).
    time_updates(time_creates(min(50, m), "warmup")[1], "warm")

    for round_no in range(rounds):
        for config in CONFIGS:
            events = ["some.other.event"] if config == "no_subscriber" else []
            Webhook.objects.filter(pk=webhook.pk).update(events=events)
            subscriptions.forget()  # update() sends no post_save
            with override_settings(WEBHOOKS=variants[config]):
                tag = f"r{round_no}-{config}"
                before = Event.objects.count()
                created_s, articles = on_clock(
                    config, "create", m, lambda tag=tag: time_creates(m, tag)
                )
                updated_s = on_clock(
                    config, "update", m, lambda saved=articles: time_updates(saved, "u")
                )
                txn_s = on_clock(config, "txn", TXN_SIZE, lambda tag=tag: time_transaction(tag))
                recorded = Event.objects.count() - before
            samples[config]["create"].append(created_s / m * 1e6)
            samples[config]["update"].append(updated_s / m * 1e6)
            samples[config]["txn"].append(txn_s / TXN_SIZE * 1e6)
            print(
                f"round {round_no + 1} {config:>13}: create {created_s / m * 1e6:7.0f} µs/save, "
                f"update {updated_s / m * 1e6:7.0f} µs/save, in one transaction "
                f"{txn_s / TXN_SIZE * 1e6:7.0f} µs/save; {recorded} events recorded",
                flush=True,
            )

    results: dict[str, Any] = {"m": m, "rounds": rounds, "us_per_save": {}}
    # Each round's own enabled / disabled: how far one round moves.
    results["round_ratios"] = {
        op: [
            round(enabled / disabled, 3)
            for enabled, disabled in zip(
                samples["enabled"][op], samples["disabled"][op], strict=True
            )
        ]
        for op in OPERATIONS
    }
    for config in CONFIGS:
        results["us_per_save"][config] = {
            op: statistics.median(values) for op, values in samples[config].items()
        }
    for side, per_config in cpu.items():
        results[f"{side}_cpu_us_per_save"] = {
            config: {
                op: round(statistics.median(values), 1) for op, values in ops.items() if values
            }
            for config, ops in per_config.items()
        }
    base = results["us_per_save"]["disabled"]
    print(f"\nmedian of {rounds} rounds, M={m} saves each (µs per save):")
    print(f"{'':>14} {'create':>8} {'ratio':>6} {'update':>8} {'ratio':>6} {'txn':>8} {'ratio':>6}")
    for config in CONFIGS:
        row = results["us_per_save"][config]
        results.setdefault("ratio", {})[config] = {op: row[op] / base[op] for op in OPERATIONS}
        print(
            f"{config:>14} "
            + " ".join(f"{row[op]:8.0f} {row[op] / base[op]:6.2f}" for op in OPERATIONS)
        )
    for side in ("client", "server"):
        medians = results[f"{side}_cpu_us_per_save"]
        if any(medians.values()):
            print(
                f"CPU µs per save, {side}: "
                + "; ".join(
                    f"{config} " + " / ".join(f"{medians[config][op]:.0f}" for op in OPERATIONS)
                    for config in CONFIGS
                )
                + " (create / update / txn)"
            )
    results["workdir"] = str(workdir)
    return results


def figures_of(results: dict[str, Any]) -> list[dict[str, Any]]:
    us = results["us_per_save"]
    return [
        figure(
            f"writepath_{op}_ratio",
            us["enabled"][op] / us["disabled"][op],
            "ratio",
            enabled_us=round(us["enabled"][op], 1),
            disabled_us=round(us["disabled"][op], 1),
            added_us=round(us["enabled"][op] - us["disabled"][op], 1),
            no_subscriber_us=round(us["no_subscriber"][op], 1),
            client_cpu_us={
                config: results["client_cpu_us_per_save"][config].get(op) for config in CONFIGS
            },
            server_cpu_us={
                config: results["server_cpu_us_per_save"][config].get(op) for config in CONFIGS
            },
            saves=results["m"] if op != "txn" else TXN_SIZE,
            rounds=results["rounds"],
            round_ratios=results["round_ratios"][op],
        )
        for op in OPERATIONS
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description="Per-save cost of webhooks on the caller.")
    parser.add_argument("--m", "--n", dest="m", type=int, default=2000, help="saves per timing")
    # Nine: one round's ratio moves by ±0.2 on a shared machine (docs/benchmarks.md).
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--quick", action="store_true", help="smoke run: M=300, 1 round")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    m, rounds = (300, 1) if args.quick else (args.m, args.rounds)
    results = run(m, rounds)
    write_figures(args.json, figures_of(results), **results)


if __name__ == "__main__":
    main()
