"""Settings of the example messaging service.

Service URLs come from the environment (``DATABASE_URL``, ``REPLICA_URL``, ``REDIS_URL``);
when they are missing, a throwaway set of servers is started for this process.
"""

from __future__ import annotations

import os
from pathlib import Path

from django_scaleops.testing.env import database_from_url, redis_cache_from_url
from django_scaleops.testing.services import ensure_services

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-project-insecure-key-for-local-demo-only")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

# The benchmark of the bare example (no django-scaleops) flips this off.
WITH_SCALEOPS = os.environ.get("EXAMPLE_SCALEOPS", "1") == "1"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    *(["django_scaleops"] if WITH_SCALEOPS else []),
    "example_project.chat",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "example_project.urls"
WSGI_APPLICATION = "example_project.wsgi.application"
ASGI_APPLICATION = "example_project.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

_services = ensure_services()

DATABASES = {
    "default": database_from_url(_services["DATABASE_URL"]),
    "replica": database_from_url(_services["REPLICA_URL"], TEST={"MIRROR": "default"}),
}

CACHES = {"default": redis_cache_from_url(_services["REDIS_URL"])}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# archive_partitions writes verified partition archives here (an S3Storage alias in production).
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    "partition_archive": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": os.environ.get("EXAMPLE_ARCHIVE_DIR", str(BASE_DIR / "var" / "partition-archive"))},
    },
}
SCALEOPS_PARTITION_ARCHIVE_STORAGE = "partition_archive"
