"""Settings for ``manage.py`` run in a subprocess by a test: the test's database, a given archive folder.

``SCALEOPS_TEST_DB_NAME`` names pytest-django's test database (the subprocess must see the rows
the test committed), ``SCALEOPS_TEST_ARCHIVE_DIR`` the folder of the archive storage.
"""

from __future__ import annotations

import os

from tests.settings import *  # noqa: F403
from tests.settings import DATABASES

DATABASES = {**DATABASES, "default": {**DATABASES["default"], "NAME": os.environ["SCALEOPS_TEST_DB_NAME"]}}

STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    "partition_archive": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": os.environ["SCALEOPS_TEST_ARCHIVE_DIR"]},
    },
}
SCALEOPS_PARTITION_ARCHIVE_STORAGE = "partition_archive"
