"""What the end-to-end benchmarks share: a real qcluster, the receiver, the raw reference,
and figures in the format ``bench/run.py --json`` prints.

Every figure is ``{"name", "value", "unit", "config", "detail"}``: ``config`` says where it was
measured (``embedded``: SQLite + ORM broker; ``postgres_redis``), ``detail`` carries the
reference it was divided by and anything else needed to read it.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import REPO_ROOT, SETTINGS_MODULE, bench_config

STOP_GRACE_SECONDS = 15.0


def figure(name: str, value: float, unit: str, **detail: Any) -> dict[str, Any]:
    return {
        "name": name,
        "value": round(value, 4),
        "unit": unit,
        "config": bench_config(),
        "detail": detail,
    }


def write_figures(path: Path | None, figures: list[dict[str, Any]], **extra: Any) -> None:
    for item in figures:
        print(json.dumps(item), flush=True)
    if path:
        path.write_text(json.dumps({"figures": figures, **extra}, indent=2))


class Cluster:
    """A ``manage.py qcluster`` subprocess in its own process group."""

    def __init__(self, db_name: str, log_path: Path, env: dict[str, str] | None = None) -> None:
        child_env = os.environ | (env or {})
        child_env |= {
            "DJANGO_SETTINGS_MODULE": SETTINGS_MODULE,  # manage.py defaults to the demo
            "WEBHOOKS_BENCH_DB": db_name,
            "PYTHONPATH": str(REPO_ROOT),
        }
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"],
            cwd=REPO_ROOT,
            env=child_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def worker_pids(self) -> list[int]:
        """The cluster's worker processes (children of its sentinel that run tasks)."""
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            pgid = int(stat.rsplit(")", 1)[1].split()[2])
            is_child = pgid == self.process.pid and int(entry.name) != self.process.pid
            if is_child and b"qcluster" in cmdline:
                pids.append(int(entry.name))
        return pids

    def stop(self) -> float:
        """SIGTERM to the main process (django-q2's graceful stop: workers finish what they
        pulled); SIGKILL of the group after the grace period. Returns the seconds it took."""
        start = time.monotonic()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        elapsed = time.monotonic() - start
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self._log.close()
        return elapsed


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def create_articles(n: int, txn_size: int, prefix: str, pace: float = 0.0) -> list[float]:
    """Create ``n`` watched Articles (``txn_size`` 1: autocommit); returns the wall-clock
    time (time.time) of each commit, one per transaction. ``pace`` spaces commits."""
    from django.db import transaction

    from tests.models import Article

    commits: list[float] = []
    body = "benchmark body " * 8
    if txn_size <= 1:
        next_at = time.monotonic()
        for i in range(n):
            if pace:
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                next_at += pace
            Article.objects.create(title=f"{prefix} {i}", body=body)
            commits.append(time.time())
    else:
        for chunk_start in range(0, n, txn_size):
            with transaction.atomic():
                for i in range(chunk_start, min(n, chunk_start + txn_size)):
                    Article.objects.create(title=f"{prefix} {i}", body=body)
            commits.append(time.time())
    return commits


def quiet_down() -> None:
    """Deactivate the webhooks of the last round (or phase), wait until its rows are all
    settled (skipped, or timed out and waiting for a retry), then delete them, so a round
    never pays for the last. (A deactivated webhook still receives every event, as a skipped
    delivery: left in place, each round's webhooks would add a row per event to every later
    round; in bench/isolation.py one more to each "beside" round than to the "alone" round it
    is compared with.)"""
    from webhooks_app.models import Delivery, Webhook

    Webhook.objects.update(is_active=False)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if not Delivery.objects.filter(status="pending", lease_token__gt="").exists() and (
            not Delivery.objects.filter(status="pending", attempts=0).exists()
        ):
            Webhook.objects.all().delete()
            return
        time.sleep(0.2)
    raise SystemExit("FAIL: the last round's deliveries did not settle within 60 s")


def wait_settled(expected: int, timeout: float) -> int:
    """Wait until ``expected`` deliveries are settled; returns how many are."""
    from webhooks_app.models import Delivery, DeliveryStatus

    deadline = time.monotonic() + timeout
    while True:
        settled = Delivery.objects.exclude(status=DeliveryStatus.PENDING).count()
        if settled >= expected or time.monotonic() > deadline:
            return settled
        time.sleep(0.1)


def _raw_worker(url: str, bodies: list[bytes], ids: list[str], go: Any, results: Any) -> None:
    from bench.receiver import raw_requests_loop

    raw_requests_loop(url, bodies[:20], ids[:20])  # warm: imports, the connection
    go.wait(60)
    start = time.time()
    raw_requests_loop(url, bodies, ids)
    results.put((start, time.time()))


def raw_loop(url: str, n: int, processes: int, body: bytes) -> float:
    """The reference: ``processes`` plain ``requests.Session`` loops POSTing ``n`` bodies in
    all to ``url`` at the same time; returns requests per second over all of them."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    go = context.Event()
    share = n // processes
    workers = [
        context.Process(
            target=_raw_worker,
            args=(url, [body] * share, [f"raw-{p}-{i}" for i in range(share)], go, results),
        )
        for p in range(processes)
    ]
    for worker in workers:
        worker.start()
    time.sleep(3)  # every process imported requests and warmed up its connection
    go.set()
    spans = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(10)
    elapsed = max(end for _, end in spans) - min(begin for begin, _ in spans)
    return share * processes / elapsed


def event_body_sample() -> bytes:
    from webhooks_app.models import Event

    body = Event.objects.order_by("-created_at").values_list("body", flat=True).first()
    return (body or json.dumps({"event": "create", "data": {"pad": "x" * 300}})).encode()
