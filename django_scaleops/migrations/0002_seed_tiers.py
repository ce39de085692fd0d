"""Seed the four product tiers. Reversing removes only tiers that no key uses."""

from __future__ import annotations

from typing import Any

from django.db import migrations

TIERS = [
    # name, requests per minute, burst, behaviour while Redis is down
    ("Free", 10, 2, "closed"),
    ("Standard", 100, 20, "local"),
    ("Professional", 1000, 100, "open"),
    ("Enterprise", 10000, 1000, "open"),
]


def seed(apps: Any, schema_editor: Any) -> None:
    Tier = apps.get_model("scaleops", "Tier")
    for name, per_minute, burst, failure_mode in TIERS:
        Tier.objects.using(schema_editor.connection.alias).get_or_create(
            name=name,
            defaults={
                "requests_per_period": per_minute,
                "period_seconds": 60,
                "burst": burst,
                "failure_mode": failure_mode,
                "expose_headers": True,
            },
        )


def unseed(apps: Any, schema_editor: Any) -> None:
    Tier = apps.get_model("scaleops", "Tier")
    Tier.objects.using(schema_editor.connection.alias).filter(
        name__in=[t[0] for t in TIERS], api_keys__isnull=True
    ).delete()


class Migration(migrations.Migration):
    dependencies = [("scaleops", "0001_initial")]

    operations = [migrations.RunPython(seed, unseed)]
