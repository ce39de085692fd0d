"""Modules that moved keep their old import paths, each with a DeprecationWarning; settings that
name an old path get scaleops.W003."""

from __future__ import annotations

import importlib
import sys

import pytest
from django.test import override_settings

from django_scaleops.checks import MOVED_PATHS, check_moved_paths, middleware_paths

pytestmark = pytest.mark.units

OLD_MODULES = {
    "django_scaleops.db.pool": ("get_pool", "django_scaleops.replicas.routing"),
    "django_scaleops.db.router": ("PrimaryReplicaRouter", "django_scaleops.replicas.router"),
    "django_scaleops.db.state": ("current_state", "django_scaleops.replicas.state"),
    "django_scaleops.middleware.throttling": ("ApiKeyThrottleMiddleware", "django_scaleops.ratelimit.middleware"),
    "django_scaleops.middleware.correlation": ("CorrelationIdMiddleware", "django_scaleops.logging.middleware"),
    "django_scaleops.middleware.routing": ("ReplicaRoutingMiddleware", "django_scaleops.replicas.middleware"),
    "django_scaleops.middleware.base": ("HybridMiddleware", "django_scaleops.hybrid"),
    "django_scaleops.ratelimit.gcra": ("limiter", "django_scaleops.ratelimit.bucket"),
}


@pytest.mark.parametrize("old", list(OLD_MODULES))
def test_an_old_module_warns_and_hands_on_the_same_object(old):
    name, new = OLD_MODULES[old]
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match="is deprecated") as warned:
        module = importlib.import_module(old)
    assert any(new in str(w.message) for w in warned), [str(w.message) for w in warned]
    assert getattr(module, name) is getattr(importlib.import_module(new), name)


@pytest.mark.parametrize("old", list(MOVED_PATHS))
def test_settings_naming_an_old_path_work_and_are_reported(old):
    setting = "DATABASE_ROUTERS" if "Router" in old else "MIDDLEWARE"
    with override_settings(**{setting: [old]}):
        (message,) = check_moved_paths()
        assert message.id == "scaleops.W003" and MOVED_PATHS[old] in message.msg
        if setting == "MIDDLEWARE":
            assert middleware_paths() == [MOVED_PATHS[old]]  # the capabilities' checks see the new one
