import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models

import django_scaleops.partitioning.constraints
from django_scaleops.partitioning.operations import CreatePartitionedModel


class Migration(migrations.Migration):
    initial = True

    dependencies = []

    operations = [
        CreatePartitionedModel(
            name="Event",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(max_length=100)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
            ],
            options={
                "indexes": [models.Index(fields=["name", "created_at"], name="event_name_idx")],
                "abstract": False,
            },
            interval=None,
        ),
        CreatePartitionedModel(
            name="Reading",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("value", models.IntegerField()),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
            ],
            options={"abstract": False},
            default_partition=False,
            interval=None,
        ),
        CreatePartitionedModel(
            name="Ticket",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("title", models.CharField(max_length=100)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
            ],
            options={"abstract": False},
            interval=None,
        ),
        CreatePartitionedModel(
            name="TicketNote",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("text", models.TextField()),
                ("created_at", models.DateTimeField()),
                (
                    "ticket",
                    models.ForeignKey(
                        db_constraint=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="notes",
                        to="partitionapp.ticket",
                    ),
                ),
            ],
            options={
                "constraints": [
                    django_scaleops.partitioning.constraints.PartitionedForeignKey(
                        fields=["ticket", "created_at"],
                        name="ticketnote_ticket_fk",
                        to="partitionapp.Ticket",
                        to_fields=["id", "created_at"],
                    )
                ],
                "abstract": False,
            },
            interval=None,
        ),
        migrations.CreateModel(
            name="LegacyLog",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("message", models.CharField(db_index=True, max_length=100)),
                ("created_at", models.DateTimeField()),
            ],
            options={"db_table": "partitionapp_legacylog", "managed": False},
        ),
    ]
