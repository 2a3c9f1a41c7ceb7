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


def setup_django(workdir: Path, **env: str) -> Path:
    """Point the benchmark settings at a new SQLite file in ``workdir``, set Django up and
    migrate. Returns the database path (a qcluster subprocess must be told it too).

    Must run before anything imports Django models; ``env`` sets extra ``WEBHOOKS_BENCH_*``
    knobs read by ``bench/settings.py`` at import.
    """
    ensure_import_path()
    db_path = workdir / "bench.sqlite3"
    os.environ["WEBHOOKS_BENCH_DB"] = str(db_path)
    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS_MODULE
    os.environ.update(env)
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)
    return db_path


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
