"""The operations dashboard's model: unmanaged, so no table; it carries the view_dashboard permission."""

from __future__ import annotations

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("scaleops", "0002_seed_tiers")]

    operations = [
        migrations.CreateModel(
            name="Dashboard",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID"))
            ],
            options={
                "verbose_name": "operations dashboard",
                "verbose_name_plural": "operations dashboard",
                "default_permissions": ("view",),
                "managed": False,
            },
        ),
    ]
