"""What the app does at start-up for query monitoring: checks, settings receiver, the monitor."""

from __future__ import annotations

from django.core.checks import register
from django.test.signals import setting_changed

from django_scaleops import wrappers
from django_scaleops.monitoring import checks, monitor


def ready() -> None:
    register(checks.check_monitoring)
    wrappers.provide("monitor", lambda connection: monitor.monitor if monitor.monitor.active else None, monitor.monitor)
    setting_changed.connect(monitor.on_setting_changed, dispatch_uid="scaleops-monitor-settings")
    monitor.install_if_enabled()
