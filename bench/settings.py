"""Django settings for the benchmarks: the test suite's apps and models, a benchmark database.

Everything the suite defines (INSTALLED_APPS, the watched ``tests.Article`` model, middleware)
is reused from ``tests.settings``; what matters for throughput is overridden here, so a change
to the suite's database or queue settings does not silently change the figures.

The benchmark scripts and the ``qcluster`` subprocess they start must open the same SQLite
file, so its path comes from ``WEBHOOKS_BENCH_DB`` (the scripts set it before Django starts).
A few knobs can be varied from the environment without editing this file:

* ``WEBHOOKS_BENCH_WORKERS`` (default 2: this machine has 2 cores)
* ``WEBHOOKS_BENCH_BATCH_SIZE`` (default: the app's own default)
* ``WEBHOOKS_BENCH_BULK`` (default 10)
* ``WEBHOOKS_BENCH_CONN_MAX_AGE`` (default 0 on SQLite, Django's default; 60 on PostgreSQL)
* ``WEBHOOKS_BENCH_SYNC`` (default 0; the write-path benchmark never starts a cluster anyway)
"""

import os
import tempfile
from pathlib import Path

from tests.settings import *  # noqa: F403
from tests.settings import INSTALLED_APPS, MIDDLEWARE  # noqa: F401  (named for readers)

DEBUG = False  # DEBUG=True would keep every SQL query in memory and slow the ORM down

_db_path = os.environ.get("WEBHOOKS_BENCH_DB") or str(
    Path(tempfile.gettempdir()) / f"webhooks-bench-{os.getpid()}.sqlite3"
)
# The second configuration: PostgreSQL + Redis, servers started by .ci/integration.sh (the
# same variables the test suite reads); bench/common.py creates a fresh database per run.
POSTGRES_HOST = os.environ.get("WEBHOOKS_TEST_POSTGRES_DSN_HOST", "")
REDIS_PORT = os.environ.get("WEBHOOKS_TEST_REDIS_PORT", "")
BENCH_CONFIG = "postgres_redis" if POSTGRES_HOST and REDIS_PORT else "embedded"

if BENCH_CONFIG == "postgres_redis":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": POSTGRES_HOST,
            "PORT": os.environ.get("WEBHOOKS_TEST_POSTGRES_PORT", "5432"),
            "NAME": _db_path,
            "USER": os.environ.get("WEBHOOKS_TEST_POSTGRES_USER", "postgres"),
            "PASSWORD": os.environ.get("WEBHOOKS_TEST_POSTGRES_PASSWORD", ""),
            # What the README recommends with django-q2; 0 reconnects on every broker poll.
            "CONN_MAX_AGE": int(os.environ.get("WEBHOOKS_BENCH_CONN_MAX_AGE", "60")),
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": _db_path,
            "OPTIONS": {
                # WAL lets the workers read while the writer commits; IMMEDIATE takes the
                # write lock at BEGIN, so two writers queue on the busy timeout instead of
                # failing with "database is locked" half-way through a transaction.
                "transaction_mode": "IMMEDIATE",
                "timeout": 30,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
            # Django's default 0; with our hand-over the caller's connection stays open.
            "CONN_MAX_AGE": int(os.environ.get("WEBHOOKS_BENCH_CONN_MAX_AGE", "0")),
            "TEST": {"NAME": _db_path},
        }
    }

_workers = int(os.environ.get("WEBHOOKS_BENCH_WORKERS", "2"))
_bulk = int(os.environ.get("WEBHOOKS_BENCH_BULK", "10"))
_queue_limit = 4
_timeout = 60

Q_CLUSTER = {
    "name": "webhooks_bench",
    "workers": _workers,
    "timeout": _timeout,
    # django-q2's visibility timeout starts when a task is pulled into the in-memory queue;
    # rule from docs/django-q2 notes: retry >= timeout * (1 + ceil((queue_limit + bulk) / w)).
    "retry": _timeout * (2 + (_queue_limit + _bulk) // max(1, _workers)),
    "max_attempts": 1,
    "queue_limit": _queue_limit,
    "bulk": _bulk,
    # Successes are not stored: the Delivery rows are the record, and each saved success
    # costs an INSERT plus a cleanup DELETE in the worker.
    "save_limit": -1,
    "poll": 0.05,
    "catch_up": False,
    # django-q2 logs every enqueue at INFO in the *caller's* process; a benchmark that
    # prints a line per save measures the terminal.
    "log_level": "WARNING",
    # Workers are replaced after this many tasks (django-q2's default is 500, which with a
    # wake-up per few commits would drop the kept-alive connections every few seconds).
    "recycle": 100_000,
    "sync": os.environ.get("WEBHOOKS_BENCH_SYNC", "0") == "1",
}
if BENCH_CONFIG == "postgres_redis":
    Q_CLUSTER["redis"] = {"host": "127.0.0.1", "port": int(REDIS_PORT), "db": 1}
else:
    Q_CLUSTER["orm"] = "default"

WEBHOOKS = {
    "MODELS": {"tests.Article": {"name": "article"}},
    # The benchmark's receiver is plain http on 127.0.0.1.
    "ALLOW_HTTP": True,
    "ALLOWED_TARGETS": ["127.0.0.1"],
    "SECRET_KEYS": ["YmVuY2gtb25seS1mZXJuZXQta2V5LTMyLWJ5dGVzISE="],
}
for _knob in ("ENDPOINT_MAX_IN_FLIGHT", "MAX_IN_FLIGHT"):
    if os.environ.get(f"WEBHOOKS_BENCH_{_knob}"):
        WEBHOOKS[_knob] = int(os.environ[f"WEBHOOKS_BENCH_{_knob}"])
if os.environ.get("WEBHOOKS_BENCH_BATCH_SIZE"):
    WEBHOOKS["BATCH_SIZE"] = int(os.environ["WEBHOOKS_BENCH_BATCH_SIZE"])

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "django_q": {"handlers": ["console"], "level": "WARNING"},
        "webhooks_app": {"handlers": ["console"], "level": "WARNING"},
    },
}
