"""Run the benchmarks and print one table (``make bench``).

Each benchmark runs in its own Python process (each sets Django up on a fresh database; a
process that already imported Django cannot switch settings) and reports figures as
``{"name", "value", "unit", "config", "detail"}``. The configuration comes from the
environment: ``embedded`` (SQLite + django-q2's ORM broker) by default, ``postgres_redis``
when .ci/integration.sh started the servers (``make bench`` runs both).

    .venv/bin/python bench/run.py                 # every benchmark, a table at the end
    .venv/bin/python bench/run.py --json          # one JSON object per figure on stdout
    .venv/bin/python bench/run.py --quick         # smoke run of each, a few minutes
    .venv/bin/python bench/run.py --only latency,isolation
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
SCRIPT_TIMEOUT_SECONDS = 1800
SCRIPTS = {
    "http_clients": "http_clients.py",
    "write_path": "write_path.py",
    "throughput": "throughput.py",
    "latency": "latency.py",
    "isolation": "isolation.py",
    "backlog": "backlog.py",
    "held_backlog": "held_backlog.py",
}


def run_script(name: str, args: list[str], quiet: bool) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="webhooks-bench-run-") as tmp:
        out = Path(tmp) / "result.json"
        env = os.environ | {"PYTHONPATH": str(REPO_ROOT)}
        print(f"\n=== {name} {' '.join(args)}", file=sys.stderr, flush=True)
        completed = subprocess.run(
            [sys.executable, str(BENCH_DIR / SCRIPTS[name]), *args, "--json", str(out)],
            cwd=REPO_ROOT,
            env=env,
            timeout=SCRIPT_TIMEOUT_SECONDS,
            check=False,
            # With --json, stdout carries only the figures: the scripts' own output goes to
            # stderr.
            stdout=sys.stderr if quiet else None,
        )
        if completed.returncode != 0 or not out.exists():
            raise SystemExit(f"{name} failed with exit code {completed.returncode}")
        return list(json.loads(out.read_text())["figures"])


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the webhook benchmarks.")
    parser.add_argument("--json", action="store_true", help="one JSON object per figure")
    parser.add_argument("--quick", action="store_true", help="smoke run of every benchmark")
    parser.add_argument("--only", help=f"comma-separated, of: {', '.join(SCRIPTS)}")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(SCRIPTS)
    unknown = [name for name in names if name not in SCRIPTS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    figures: list[dict[str, Any]] = []
    for name in names:
        figures += run_script(name, ["--quick"] if args.quick else [], quiet=args.json)
    if args.json:
        for item in figures:
            print(json.dumps(item), flush=True)
        return
    print(f"\n{'figure':<44} {'value':>12}  {'unit':<16} config")
    for item in figures:
        print(f"{item['name']:<44} {item['value']:>12,.3f}  {item['unit']:<16} {item['config']}")


if __name__ == "__main__":
    main()
