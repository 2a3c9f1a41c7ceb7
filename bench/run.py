"""Run the benchmarks and print one short table (``make bench``).

Each benchmark runs in its own Python process: each sets Django up on its own fresh
database, and a process that already imported Django cannot switch settings.

    .venv/bin/python bench/run.py            # full: N=2000 (about 2 minutes on 2 cores)
    .venv/bin/python bench/run.py --quick    # smoke run, well under a minute
    .venv/bin/python bench/run.py --n 5000   # more events per variant
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
# A benchmark that hangs must not hang `make bench`; the scripts bound their own waits too.
SCRIPT_TIMEOUT_SECONDS = 900


def run_script(name: str, args: list[str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="webhooks-bench-run-") as tmp:
        out = Path(tmp) / "result.json"
        env = os.environ | {"PYTHONPATH": str(REPO_ROOT)}
        print(f"\n=== {name} {' '.join(args)}", flush=True)
        completed = subprocess.run(
            [sys.executable, str(BENCH_DIR / name), *args, "--json", str(out)],
            cwd=REPO_ROOT,
            env=env,
            timeout=SCRIPT_TIMEOUT_SECONDS,
            check=False,
        )
        if completed.returncode != 0 or not out.exists():
            raise SystemExit(f"{name} failed with exit code {completed.returncode}")
        return dict(json.loads(out.read_text()))


def main() -> None:
    parser = argparse.ArgumentParser(description="Run all webhook benchmarks.")
    parser.add_argument("--n", type=int, default=2000, help="events per variant / saves")
    parser.add_argument("--quick", action="store_true", help="smoke run of every benchmark")
    args = parser.parse_args()
    size = ["--quick"] if args.quick else ["--n", str(args.n)]

    throughput = run_script("throughput.py", size)
    write_path = run_script("write_path.py", size)

    machine = throughput.get("machine", {})
    print("\n=== summary")
    print(
        f"machine: {machine.get('nproc')} cores, Python {machine.get('python')}, "
        f"Django {machine.get('django')}, django-q2 {machine.get('django-q2')}; "
        f"workers={throughput['workers']}, BATCH_SIZE={throughput['batch_size']}, "
        f"CONN_MAX_AGE={throughput['conn_max_age']}, SQLite WAL, ORM broker"
    )
    raw = throughput["raw_req_per_s"]
    print(f"\n{'end-to-end (N=' + str(throughput['n']) + ')':<34} {'deliveries/s':>12} {'/raw':>6}")
    for variant in throughput["variants"]:
        label = (
            f"{variant['txn_size']} saves per transaction"
            if variant["txn_size"] > 1
            else "1 save per transaction"
        )
        print(f"{label:<34} {variant['deliveries_per_s']:12,.0f} {variant['ratio_to_raw']:6.2f}")
    print(f"{'raw requests.Session loop':<34} {raw:12,.0f} {1:6.2f}")

    us = write_path["us_per_save"]
    title = f"write path (M={write_path['m']}, µs/save)"
    print(f"\n{title:<34} {'create':>8} {'update':>8}")
    for config in ("disabled", "enabled", "no_subscriber"):
        print(f"{config:<34} {us[config]['create']:8.0f} {us[config]['update']:8.0f}")
    ratio = write_path["ratio"]["enabled"]
    print(f"{'enabled / disabled':<34} {ratio['create']:8.1f}x {ratio['update']:7.1f}x")


if __name__ == "__main__":
    main()
