"""What every benchmark script needs: import paths, a fresh database, Django set up once."""

from __future__ import annotations

import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
SETTINGS_MODULE = "bench.settings"


def ensure_import_path() -> None:
    """``python bench/x.py`` puts ``bench/`` on sys.path, not the repo root we import from."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))


def bench_config() -> str:
    """``postgres_redis`` when .ci/integration.sh started the servers, else ``embedded``."""
    has_servers = os.environ.get("WEBHOOKS_TEST_POSTGRES_DSN_HOST") and os.environ.get(
        "WEBHOOKS_TEST_REDIS_PORT"
    )
    return "postgres_redis" if has_servers else "embedded"


def _create_postgres_database(name: str) -> None:
    import psycopg

    with psycopg.connect(
        host=os.environ["WEBHOOKS_TEST_POSTGRES_DSN_HOST"],
        port=int(os.environ.get("WEBHOOKS_TEST_POSTGRES_PORT", "5432")),
        user=os.environ.get("WEBHOOKS_TEST_POSTGRES_USER", "postgres"),
        password=os.environ.get("WEBHOOKS_TEST_POSTGRES_PASSWORD", ""),
        dbname="postgres",
        autocommit=True,
    ) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')


def setup_django(workdir: Path, **env: str) -> str:
    """Point the benchmark settings at a new database (a SQLite file in ``workdir``, or a
    new PostgreSQL database), set Django up and migrate. Returns the database's name (a
    qcluster subprocess must be told it too, as ``WEBHOOKS_BENCH_DB``).

    Must run before anything imports Django models; ``env`` sets extra ``WEBHOOKS_BENCH_*``
    knobs read by ``bench/settings.py`` at import.
    """
    ensure_import_path()
    if bench_config() == "postgres_redis":
        db_name = f"webhooks_bench_{os.getpid()}_{workdir.name[-8:].lower()}"
        _create_postgres_database(db_name)
    else:
        db_name = str(workdir / "bench.sqlite3")
    os.environ["WEBHOOKS_BENCH_DB"] = db_name
    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS_MODULE
    os.environ.update(env)
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)
    if bench_config() == "postgres_redis":
        from django_q.brokers import get_broker

        get_broker().purge_queue()  # Redis outlives each run's database
    return db_name


def make_workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="webhooks-bench-"))


def machine_info() -> dict[str, Any]:
    from importlib.metadata import version

    return {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "django": version("django"),
        "django-q2": version("django-q2"),
        "requests": version("requests"),
        "platform": platform.platform(),
    }
