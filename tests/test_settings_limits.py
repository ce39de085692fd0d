"""Settings declare their own limits: one generic check (E001-E003), old names (W002, E004), run-time defaults."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from django.core.checks import Error, Warning
from django.core.signals import setting_changed
from django.test import override_settings

from django_scaleops import conf as conf_module
from django_scaleops.apm.checks import SDK_MODULES
from django_scaleops.checks import check_settings
from django_scaleops.conf import Setting, Settings, conf
from django_scaleops.http.negotiation import encoders

pytestmark = pytest.mark.units  # no server: also runs under tests.settings_units (make test-units)

DECLARED = Settings.declared()


def out_of_range(setting: Setting[Any]) -> list[float]:
    """Values just outside each bound of ``setting``."""
    values: list[float] = []
    if setting.min is not None:
        values.append(setting.min - 1)
    if setting.max is not None:
        values.append(setting.max + 1)
    values += [bound for bound in (setting.above, setting.below) if bound is not None]
    types = setting.types if isinstance(setting.types, tuple) else (setting.types,)
    return values if int in types else [float(value) for value in values]


RANGES = [(name, value) for name, setting in DECLARED.items() for value in out_of_range(setting)]
CHOICES = [name for name, setting in DECLARED.items() if setting.choices is not None]
ITEM_CHOICES = [name for name, setting in DECLARED.items() if setting.item_choices is not None]


@pytest.fixture
def warned(monkeypatch):
    """A fresh record of the settings already warned about, so each test sees its own warning."""
    monkeypatch.setattr(conf_module, "_warned", set())


def test_the_declared_limits_are_many():
    # A guard for the parametrised tests below: they must cover the ranges that were hand-written before.
    assert len(RANGES) >= 55
    assert CHOICES == ["SCALEOPS_APM_REQUEST_TRACING"]
    assert ITEM_CHOICES == ["SCALEOPS_APM_ENABLED", "SCALEOPS_HTTP_ENCODINGS"]


@pytest.mark.parametrize(("name", "value"), RANGES)
def test_a_value_out_of_range_is_an_error_naming_the_limit_and_reads_as_the_default(name, value, warned, caplog):
    setting = DECLARED[name]
    with override_settings(**{name: value}):
        messages = check_settings()
        with caplog.at_level(logging.WARNING, logger="django_scaleops.conf"):
            assert getattr(conf, name) == setting.default
    assert [(m.id, type(m)) for m in messages] == [("scaleops.E002", Error)]
    assert messages[0].msg == f"{name} must be {setting.range_text()}, not {value!r}."
    assert f"Default: {setting.default!r}" in (messages[0].hint or "")
    assert f"{name} must be {setting.range_text()}, not {value!r}; using its default" in caplog.text


@pytest.mark.parametrize("name", CHOICES)
def test_a_value_that_is_not_a_choice_is_an_error_listing_them(name, warned):
    setting = DECLARED[name]
    with override_settings(**{name: "nonsense"}):
        (message,) = check_settings()
        assert getattr(conf, name) == setting.default
    assert message.id == "scaleops.E003"
    assert name in message.msg and "'nonsense'" in message.msg
    assert all(repr(choice) in message.msg for choice in setting.choices or ())


@pytest.mark.parametrize("name", ITEM_CHOICES)
def test_a_list_entry_that_is_not_a_choice_is_an_error_naming_it(name, warned):
    setting = DECLARED[name]
    value = [*(setting.item_choices or ())[:1], "nonsense"]
    with override_settings(**{name: value}):
        (message,) = check_settings()
        assert getattr(conf, name) == setting.default
    assert message.id == "scaleops.E003"
    assert message.msg.startswith(f"{name} must list only ")
    assert f"not {value!r} (unknown: 'nonsense')" in message.msg


def test_values_in_range_are_accepted():
    with override_settings(
        SCALEOPS_APM_SAMPLE_RATE=1,
        SCALEOPS_MONITOR_DEGRADED_SHARE=0.5,
        SCALEOPS_THROTTLE_LEASE_MAX=0,
        SCALEOPS_HTTP_ENCODINGS=("gzip",),
        SCALEOPS_APM_REQUEST_TRACING="vendor",
    ):
        assert check_settings() == []
        assert conf.SCALEOPS_APM_SAMPLE_RATE == 1


@override_settings(SCALEOPS_LOG_EXCLUDE_PATHS=["/health", 7])
def test_a_list_entry_of_the_wrong_type_is_a_type_error():
    (message,) = check_settings()
    assert message.id == "scaleops.E001"
    assert message.msg == "SCALEOPS_LOG_EXCLUDE_PATHS must be list or tuple of str, not ['/health', 7] (7 is int)."


@override_settings(SCALEOPS_MONITOR_HEALTH_DATABASES=("default", None))
def test_an_optional_list_names_its_types_in_words():
    (message,) = check_settings()
    assert "must be list or tuple of str or None" in message.msg


def test_a_bool_is_not_a_number_even_in_range():
    with override_settings(SCALEOPS_APM_SAMPLE_RATE=True):
        assert [m.id for m in check_settings()] == ["scaleops.E001"]


def test_none_is_not_compared_with_a_bound():
    with override_settings(SCALEOPS_APM_SAMPLE_RATE=None):
        assert check_settings() == []


# ---- renamed settings


def test_every_old_name_belongs_to_one_setting_and_is_not_a_current_name():
    renamed = Settings.renamed()
    assert len(renamed) == sum(len(setting.old_names) for setting in DECLARED.values())
    assert set(renamed) & set(DECLARED) == set()
    assert renamed["SCALEOPS_SLOW_QUERY_MS"] == "SCALEOPS_MONITOR_SLOW_QUERY_MS"


@pytest.mark.parametrize(("old", "new"), sorted(Settings.renamed().items()))
def test_an_old_name_still_works_and_is_a_warning_naming_the_new_one(old, new):
    value = DECLARED[new].default
    value = value + 1 if isinstance(value, (int, float)) and not isinstance(value, bool) else "elsewhere"
    with override_settings(**{old: value}):
        messages = check_settings()
        assert getattr(conf, new) == value
    assert [(m.id, type(m)) for m in messages] == [("scaleops.W002", Warning)]
    assert old in messages[0].msg and new in messages[0].msg


def test_both_names_set_is_an_error_and_the_new_one_wins():
    with override_settings(SCALEOPS_SLOW_QUERY_MS=5, SCALEOPS_MONITOR_SLOW_QUERY_MS=50):
        messages = check_settings()
        assert conf.SCALEOPS_MONITOR_SLOW_QUERY_MS == 50
    assert [m.id for m in messages] == ["scaleops.E004"]
    assert "SCALEOPS_SLOW_QUERY_MS" in messages[0].msg and "SCALEOPS_MONITOR_SLOW_QUERY_MS" in messages[0].msg


def test_an_old_name_with_a_bad_value_is_reported_under_the_name_that_was_set(warned):
    with override_settings(SCALEOPS_SLOW_QUERY_MS=-1):
        messages = check_settings()
        assert conf.SCALEOPS_MONITOR_SLOW_QUERY_MS == 100  # the default
    assert [m.id for m in messages] == ["scaleops.W002", "scaleops.E002"]
    assert messages[1].msg == "SCALEOPS_SLOW_QUERY_MS must be at least 0, not -1."


@override_settings(SCALEOPS_SLOW_QUERY_M=5)
def test_a_typo_of_an_old_name_suggests_the_new_one():
    (message,) = check_settings()
    assert message.id == "scaleops.W001"
    assert message.hint == "Did you mean SCALEOPS_MONITOR_SLOW_QUERY_MS?"


def test_overriding_an_old_name_is_also_announced_under_the_new_one():
    heard: list[tuple[str, object]] = []

    def receiver(*, setting: str, value: object = None, **kwargs: object) -> None:
        heard.append((setting, value))

    setting_changed.connect(receiver)
    try:
        with override_settings(SCALEOPS_MONITOR_REDIS_CACHE=None):
            pass
    finally:
        setting_changed.disconnect(receiver)
    assert ("SCALEOPS_MONITOR_REDIS_CACHE", None) in heard
    assert ("SCALEOPS_MONITOR_CACHE_ALIAS", None) in heard


# ---- the choices match what the code can do


def test_the_apm_vendors_are_the_ones_set_up():
    assert set(DECLARED["SCALEOPS_APM_ENABLED"].item_choices or ()) == set(SDK_MODULES)


def test_every_encoder_can_be_offered():
    assert set(encoders()) <= set(DECLARED["SCALEOPS_HTTP_ENCODINGS"].item_choices or ())
