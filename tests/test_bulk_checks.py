from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test.utils import override_settings

from django_scaleops.bulk.checks import check_bulk_settings
from django_scaleops.checks import check_settings

pytestmark = pytest.mark.units  # no server: also runs under tests.settings_units (make test-units)


def test_defaults_pass():
    assert check_bulk_settings() == []


@override_settings(SCALEOPS_BULK_BATCH_SIZE=0, SCALEOPS_BULK_MAX_RETRIES=-1)
def test_values_below_the_minimum_are_errors_and_the_check_is_bound():
    messages = check_settings()
    assert [(m.id, m.msg) for m in messages] == [
        ("scaleops.E002", "SCALEOPS_BULK_BATCH_SIZE must be at least 1, not 0."),
        ("scaleops.E002", "SCALEOPS_BULK_MAX_RETRIES must be at least 0, not -1."),
    ]
    with pytest.raises(SystemCheckError, match="E002"):
        call_command("check")


@override_settings(SCALEOPS_BULK_BATCH_SIZE="big")
def test_wrong_types_are_left_to_the_type_check():
    assert check_bulk_settings() == []
    with pytest.raises(SystemCheckError, match="E001"):
        call_command("check")
