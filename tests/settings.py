"""Settings for the test suite: SQLite in a file so a real qcluster subprocess can share it.

Variables that the integration suite (``.ci/integration.sh``) sets switch the database to
PostgreSQL and the broker to Redis; without them everything runs on SQLite and the ORM broker.
"""

import os
import tempfile
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent
SECRET_KEY = "tests-only-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "tests.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
ALLOWED_HOSTS = ["*"]

INSTALLED_APPS = [
    # Before django.contrib.admin: its admin/index.html adds the "no worker" warning.
    "webhooks_app",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django_q",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "tests",
]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "webhooks_app.middleware.WebhookActorMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

# A qcluster subprocess started by a test is told the test database's file name through
# WEBHOOKS_TEST_DB_NAME, so both processes open the same database.
_sqlite_name = os.environ.get("WEBHOOKS_TEST_DB_NAME") or str(
    Path(tempfile.gettempdir()) / f"webhooks-tests-{os.getpid()}.sqlite3"
)

if os.environ.get("WEBHOOKS_TEST_POSTGRES_DSN_HOST"):
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": os.environ["WEBHOOKS_TEST_POSTGRES_DSN_HOST"],
            "PORT": os.environ.get("WEBHOOKS_TEST_POSTGRES_PORT", "5432"),
            "NAME": os.environ.get("WEBHOOKS_TEST_DB_NAME", "webhooks"),
            "USER": os.environ.get("WEBHOOKS_TEST_POSTGRES_USER", "postgres"),
            "PASSWORD": os.environ.get("WEBHOOKS_TEST_POSTGRES_PASSWORD", ""),
            "CONN_MAX_AGE": 60,
            "TEST": {"NAME": os.environ.get("WEBHOOKS_TEST_DB_NAME", "test_webhooks")},
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": _sqlite_name,
            "OPTIONS": {
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
            "TEST": {"NAME": _sqlite_name},
        }
    }

Q_CLUSTER = {
    "name": "webhooks_tests",
    "workers": 2,
    "timeout": 60,
    "retry": 180,
    "max_attempts": 1,
    "queue_limit": 4,
    "save_limit": -1,
    "poll": 0.1,
    "catch_up": False,
    # The test process runs tasks inline; a qcluster subprocess sets WEBHOOKS_TEST_SYNC=0.
    "sync": os.environ.get("WEBHOOKS_TEST_SYNC", "1") == "1",
}
if os.environ.get("WEBHOOKS_TEST_REDIS_PORT"):
    Q_CLUSTER["redis"] = {
        "host": "127.0.0.1",
        "port": int(os.environ["WEBHOOKS_TEST_REDIS_PORT"]),
        "db": 0,
    }
else:
    Q_CLUSTER["orm"] = "default"

WEBHOOKS = {
    "MODELS": {
        "tests.Article": {
            "name": "article",
            "status_field": "status",
            "published_value": "published",
        },
        "tests.Account": {"name": "account"},
        "tests.Invoice": {"name": "invoice", "fields": ["number", "amount", "issued_on"]},
    },
    "EVENTS": {"backup.complete": "A backup finished.", "report.ready": "A report is ready."},
    "USER_EVENTS": ["user.create", "user.login"],
    # The suite's receivers listen on plain http on 127.0.0.1: allow exactly that (the
    # tests of the guard itself set the defaults back). Keep retries quick.
    "ALLOW_HTTP": True,
    "ALLOWED_TARGETS": ["127.0.0.1", "::1"],
    "RETRY_SCHEDULE": [1, 2, 4],
    # Fernet keys for secrets at rest (not secret: these are the suite's own).
    "SECRET_KEYS": ["c3VpdGUtb25seS1mZXJuZXQta2V5LTMyLWJ5dGVzISE="],
    # A qcluster subprocess in a recovery test gets a short lease, so recovery takes seconds.
    "LEASE_SECONDS": int(os.environ.get("WEBHOOKS_TEST_LEASE_SECONDS", "45")),
    # A qcluster subprocess in an isolation test gets short runs, so they end mid-test.
    "TASK_SECONDS": float(os.environ.get("WEBHOOKS_TEST_TASK_SECONDS", "5")),
}
if os.environ.get("WEBHOOKS_TEST_DEFAULT_TARGETS") == "1":
    # A qcluster subprocess in a guard test sends with the package's defaults.
    del WEBHOOKS["ALLOW_HTTP"], WEBHOOKS["ALLOWED_TARGETS"]

# The API tests: Basic first, so an anonymous request is a 401 with WWW-Authenticate.
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.BasicAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {"TITLE": "django-webhooks API (tests)", "VERSION": "0"}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django_q": {"handlers": ["console"], "level": "WARNING"}},
}
