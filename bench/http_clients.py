"""Which HTTP client should the delivery engine use? Measured, not guessed.

Each candidate POSTs the same ~330-byte JSON body to the benchmark receiver (its own process,
asyncio, keep-alive) at several concurrencies:

* ``requests``: one ``requests.Session`` shared by C threads (pool size C);
* ``urllib3``: one ``urllib3.PoolManager`` shared by C threads (pool size C), no retries;
* ``aiohttp``: one ``aiohttp.ClientSession`` on one asyncio loop, C tasks.

Two receivers: ``fast`` (answers at once: what a request costs the sender's CPU) and
``slow`` (answers after 200 ms: how many requests one process keeps in flight). For each run it
prints requests per wall-clock second and requests per CPU-second of this process (user +
system), so a client that only looks fast because it burns a second core is visible.

    .venv/bin/python bench/http_clients.py            # about a minute
    .venv/bin/python bench/http_clients.py --quick
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.receiver import ReceiverProcess

BODY = json.dumps({"id": "evt_0", "event": "create", "data": {"pad": "x" * 260}}).encode()
HEADERS = {"Content-Type": "application/json", "webhook-id": "evt_0"}
RUN_TIMEOUT_SECONDS = 60


def _threads(count: int, concurrency: int, send: Callable[[], int]) -> None:
    """``count`` requests spread over ``concurrency`` threads, each calling ``send``."""
    remaining = [count]
    lock = threading.Lock()
    errors: list[BaseException] = []
    deadline = time.monotonic() + RUN_TIMEOUT_SECONDS

    def work() -> None:
        while time.monotonic() < deadline:
            with lock:
                if remaining[0] <= 0:
                    return
                remaining[0] -= 1
            try:
                if send() != 200:
                    raise RuntimeError("non-200 answer")
            except BaseException as exc:
                errors.append(exc)
                return

    workers = [threading.Thread(target=work) for _ in range(concurrency)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if errors or remaining[0] > 0:
        raise RuntimeError(f"{len(errors)} errors, {remaining[0]} not sent: {errors[:1]}")


def run_requests(url: str, count: int, concurrency: int) -> None:
    import requests
    from requests.adapters import HTTPAdapter

    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=concurrency, max_retries=0)
    session.mount("http://", adapter)

    def send() -> int:
        response = session.post(url, data=BODY, headers=HEADERS, timeout=10)
        response.content  # noqa: B018  (read the body, as the engine does)
        return response.status_code

    _threads(count, concurrency, send)
    session.close()


def run_urllib3(url: str, count: int, concurrency: int) -> None:
    import urllib3

    pool = urllib3.PoolManager(maxsize=concurrency, block=True, retries=False)

    def send() -> int:
        response = pool.request("POST", url, body=BODY, headers=HEADERS, timeout=10.0)
        return int(response.status)

    _threads(count, concurrency, send)
    pool.clear()


def run_aiohttp(url: str, count: int, concurrency: int) -> None:
    import aiohttp

    async def main() -> None:
        connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            remaining = [count]

            async def work() -> None:
                while remaining[0] > 0:
                    remaining[0] -= 1
                    async with session.post(url, data=BODY, headers=HEADERS) as response:
                        await response.read()
                        if response.status != 200:
                            raise RuntimeError("non-200 answer")

            await asyncio.wait_for(
                asyncio.gather(*(work() for _ in range(concurrency))), RUN_TIMEOUT_SECONDS
            )

    asyncio.run(main())


CLIENTS: dict[str, Callable[[str, int, int], None]] = {
    "requests": run_requests,
    "urllib3": run_urllib3,
    "aiohttp": run_aiohttp,
}


def measure(client: str, url: str, count: int, concurrency: int) -> dict[str, Any]:
    run = CLIENTS[client]
    run(url, min(count, 50), min(concurrency, 8))  # warm up imports, pools and the receiver
    cpu_before = os.times()
    start = time.perf_counter()
    run(url, count, concurrency)
    wall = time.perf_counter() - start
    cpu_after = os.times()
    cpu = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
    return {
        "client": client,
        "concurrency": concurrency,
        "requests": count,
        "req_per_s": count / wall,
        "req_per_cpu_s": count / cpu if cpu > 0 else float("inf"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests per run")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    fast_count = 600 if args.quick else 3000
    results: list[dict[str, Any]] = []
    with ReceiverProcess() as receiver:
        cases = [("fast", f"{receiver.base_url}/hook", c, fast_count) for c in (1, 16, 64)]
        cases += [
            (
                "slow",
                f"{receiver.base_url}/delay/200/hook",
                c,
                max(20, c * (3 if args.quick else 6)),
            )
            for c in (16, 64, 256)
        ]
        print(f"{'receiver':<8} {'client':<9} {'C':>4} {'req/s':>8} {'req/CPU-s':>10}")
        for receiver_kind, url, concurrency, count in cases:
            for client in CLIENTS:
                row = measure(client, url, count, concurrency) | {"receiver": receiver_kind}
                results.append(row)
                print(
                    f"{receiver_kind:<8} {client:<9} {concurrency:>4} {row['req_per_s']:8,.0f} "
                    f"{row['req_per_cpu_s']:10,.0f}",
                    flush=True,
                )
    from bench.harness import figure, write_figures

    figures = [
        figure(
            f"http_{row['client']}_{row['receiver']}_c{row['concurrency']}_req_per_cpu_s",
            row["req_per_cpu_s"],
            "requests/CPU-s",
            req_per_s=round(row["req_per_s"], 1),
            requests=row["requests"],
        )
        for row in results
    ]
    write_figures(args.json, figures)


if __name__ == "__main__":
    main()
