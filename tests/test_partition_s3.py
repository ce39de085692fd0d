"""Archive and restore through django-storages' S3 backend, against moto's local S3 server.

Skipped when the optional packages (``pip install 'moto[server]' 'django-storages[s3]'``, both in
the ``dev`` extra) are missing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.test.utils import override_settings

from django_scaleops.partitioning.introspection import table_exists
from tests.partitionapp.models import Event

moto_server = pytest.importorskip("moto.server")
pytest.importorskip("storages.backends.s3")
boto3 = pytest.importorskip("boto3")

CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def bucket(s3_endpoint: str) -> Iterator[object]:
    s3 = boto3.resource("s3", endpoint_url=s3_endpoint, **CREDENTIALS)
    created = s3.create_bucket(Bucket="scaleops-archive-test")
    stores = {
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
        "s3_archive": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": "scaleops-archive-test",
                "endpoint_url": s3_endpoint,
                "access_key": "testing",
                "secret_key": "testing",
                "region_name": "us-east-1",
            },
        },
    }
    with override_settings(STORAGES=stores, SCALEOPS_PARTITION_ARCHIVE_STORAGE="s3_archive"):
        yield created
    created.objects.all().delete()
    created.delete()


@pytest.mark.django_db
def test_archive_to_s3_and_restore(bucket):
    out = StringIO()
    call_command(
        "ensure_partitions", model=["partitionapp.Event"], now="2024-06-15T00:00:00Z", since="2024-01-01", stdout=out
    )
    start = datetime(2024, 1, 1, tzinfo=UTC)
    Event.objects.bulk_create(Event(name=f"e{i}", created_at=start + timedelta(hours=31 * i)) for i in range(120))
    january = list(Event.objects.filter(created_at__lt=datetime(2024, 2, 1, tzinfo=UTC)).order_by("id").values_list())
    call_command("archive_partitions", model=["partitionapp.Event"], now="2024-06-15T00:00:00Z", stdout=out)
    assert not table_exists_named("partitionapp_event_p2024_01")
    prefix = "scaleops-archive/default/partitionapp_event/"
    keys = sorted(o.key.removeprefix(prefix) for o in bucket.objects.all())
    # One object per archive run, <partition>.<run id>.<sha256>.csv.gz, and a manifest generation.
    assert [re.sub(r"\.\w+-\w+\.[0-9a-f]{64}\.", ".<run>.<sha>.", k) for k in keys] == [
        "partitionapp_event_p2024_01.<run>.<sha>.csv.gz",
        "partitionapp_event_p2024_01.manifest.000001.json",
        "partitionapp_event_p2024_02.<run>.<sha>.csv.gz",
        "partitionapp_event_p2024_02.manifest.000001.json",
    ]
    assert not Event.objects.filter(created_at__lt=datetime(2024, 2, 1, tzinfo=UTC)).exists()
    call_command("restore_partition", "partitionapp.Event", "partitionapp_event_p2024_01", stdout=out)
    assert "checksum verified" in out.getvalue()
    restored = Event.objects.filter(created_at__lt=datetime(2024, 2, 1, tzinfo=UTC)).order_by("id").values_list()
    assert list(restored) == january
    # S3Storage overwrites by default (file_overwrite=True). A late row joins the restored January:
    # archiving it again adds a second object (January's rows + the late one) and a manifest
    # generation, replacing nothing; restore skips the rows present in both archives.
    versions = {o.key: o.e_tag for o in bucket.objects.all()}
    Event.objects.create(name="late", created_at=datetime(2024, 1, 31, tzinfo=UTC))
    call_command("archive_partitions", model=["partitionapp.Event"], now="2024-06-15T00:00:00Z", stdout=out)
    after = {o.key: o.e_tag for o in bucket.objects.all()}
    assert {key: after.get(key) for key in versions} == versions
    assert len(after) == len(versions) + 2  # the new object and the next manifest generation
    call_command("restore_partition", "partitionapp.Event", "partitionapp_event_p2024_01", stdout=out)
    assert Event.objects.filter(created_at__lt=datetime(2024, 2, 1, tzinfo=UTC)).count() == len(january) + 1


def table_exists_named(name: str) -> bool:
    from django.db import connection

    return table_exists(connection, name)
