"""Settings for the demo: a blog whose changes are sent as webhooks to a receiver in the same site.

Everything here is for a laptop, not a server: DEBUG is on, the secrets are constants in this
file, and the admin account is admin/admin. Two environment variables exist so the tests can run
the demo without touching a developer's ``.demo/`` directory or port 8000:

* ``WEBHOOKS_DEMO_DB``: path of the SQLite file (default ``<repo>/.demo/db.sqlite3``);
* ``WEBHOOKS_DEMO_PORT``: the port ``run.py`` serves on and the endpoints point at (8000).
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent
REPO_DIR = BASE_DIR.parent

# Demo only: a real project reads these from the environment or a secrets store.
SECRET_KEY = "demo-only-not-secret-0f3b9c1e7a"
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "demo_project.urls"
WSGI_APPLICATION = "demo_project.wsgi.application"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
STATIC_URL = "static/"

INSTALLED_APPS = [
    # Before django.contrib.admin: its admin/index.html adds the "no worker" warning.
    "webhooks_app",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_q",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    # Swagger UI's files, served by staticfiles from this package instead of a CDN.
    "drf_spectacular_sidecar",
    "demo_project.blog",
    "demo_project.receiver",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # After authentication, so the events record who made the change in the admin.
    "webhooks_app.middleware.WebhookActorMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
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

DEMO_DB_PATH = Path(os.environ.get("WEBHOOKS_DEMO_DB") or REPO_DIR / ".demo" / "db.sqlite3")
DEMO_DB_PATH.parent.mkdir(parents=True, exist_ok=True)

# The web server and the qcluster workers write to one SQLite file at the same time: WAL lets
# readers proceed during a write, IMMEDIATE takes the write lock up front so two writers queue
# on the busy timeout instead of failing with "database is locked" half-way through.
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": DEMO_DB_PATH,
        "OPTIONS": {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
    }
}

# The ORM broker keeps the demo to one process tree and one file: no Redis to install.
Q_CLUSTER = {
    "name": "webhooks_demo",
    "orm": "default",
    "workers": 3,
    "timeout": 60,
    "retry": 180,
    "max_attempts": 1,
    "save_limit": -1,
    "queue_limit": 6,
    "poll": 0.2,
    "catch_up": False,
}

DEMO_PORT = int(os.environ.get("WEBHOOKS_DEMO_PORT", "8000"))
DEMO_BASE_URL = f"http://127.0.0.1:{DEMO_PORT}"

# Demo only: both ends of the loop live in this file so the receiver can check what the sender
# signed. A real receiver keeps its copy of the secret in its own configuration.
DEMO_STANDARD_SECRET = "whsec_LSdJgJi9HVokDLyGE5rEBn9IzceBDM4zVsO7+KdgywY="
DEMO_SCALAR_SECRET = "demo-only-scalar-secret-6c1d2e"

WEBHOOKS = {
    "MODELS": {
        "blog.BlogPost": {
            "name": "blogPost",
            "status_field": "status",
            "published_value": "published",
        },
        "blog.Page": {"name": "page"},
    },
    "EVENTS": {"backup.complete": "A backup of the site finished."},
    "USER_EVENTS": ["user.create", "user.login"],
    # Short so a retry is visible while you watch: fail the receiver, save a post, wait.
    "RETRY_SCHEDULE": [5, 30, 120],
    "DEBUG": True,
    # The API (/api/) accepts the demo's own receiver on plain http://127.0.0.1.
    "ALLOW_HTTP": True,
    "ALLOWED_TARGETS": ["127.0.0.1", "localhost"],
    "ENDPOINTS": [
        {
            # Every event, checked the Standard Webhooks way (webhook-id/-timestamp/-signature).
            "name": "Demo receiver (Standard Webhooks)",
            "url": f"{DEMO_BASE_URL}/receiver/standard/",
            "secret": DEMO_STANDARD_SECRET,
            "timeout": 5.0,
            "retries": 3,
        },
        {
            # The Scalar docs' example endpoint, checked like their Express handler does.
            "name": "Demo receiver (Scalar style)",
            "url": f"{DEMO_BASE_URL}/receiver/scalar/",
            "events": ["create", "update", "delete", "publish", "unpublish"],
            "models": ["blogPost", "page"],
            "secret": DEMO_SCALAR_SECRET,
            "headers": {"X-Custom-Header": "value"},
            "timeout": 5.0,
            "retries": 3,
            "method": "POST",
            "signature_header": "X-Scalar-Signature",
            "signature_prefix": "sha256=",
        },
    ],
}

# The REST API at /api/: `curl -u admin:admin` (Basic) or the admin's session cookie.
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.BasicAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "django-webhooks demo API",
    "DESCRIPTION": "Manage webhooks, inspect events and deliveries, test, retry, recover.",
    "VERSION": "1",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# What the receiver app checks each slot against; the keys are the URL slots.
DEMO_RECEIVER_SECRETS = {"standard": DEMO_STANDARD_SECRET, "scalar": DEMO_SCALAR_SECRET}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"short": {"format": "%(asctime)s %(name)s %(levelname)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "short"}},
    "loggers": {
        "webhooks_app": {"handlers": ["console"], "level": "DEBUG", "propagate": False},
        "django_q": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
}
