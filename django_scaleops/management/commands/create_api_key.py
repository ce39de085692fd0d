"""``manage.py create_api_key NAME --tier Standard``: prints the new key once."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from django_scaleops.ratelimit.models import ApiKey, Tier


class Command(BaseCommand):
    help = "Create an API key on a tier and print it once (only its hash is stored)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="What the key is for.")
        parser.add_argument("--tier", required=True, help="Tier name, e.g. Free, Standard, Professional.")
        parser.add_argument("--owner", help="Username of the owning user.")
        parser.add_argument("--expires-in-days", type=int, help="Expire the key after this many days.")
        parser.add_argument("--dry-run", action="store_true", help="Check the arguments; create nothing.")

    def handle(self, *args: Any, **options: Any) -> None:
        tier = Tier.objects.filter(name__iexact=options["tier"]).first()
        if tier is None:
            names = ", ".join(Tier.objects.values_list("name", flat=True)) or "none"
            raise CommandError(f"No tier named {options['tier']!r}. Tiers: {names}.")
        owner = None
        if options["owner"]:
            User = get_user_model()
            owner = User._default_manager.filter(**{User.USERNAME_FIELD: options["owner"]}).first()
            if owner is None:
                raise CommandError(f"No user {options['owner']!r}.")
        days = options["expires_in_days"]
        if days is not None and days < 1:
            raise CommandError("--expires-in-days must be at least 1.")
        expires_at = timezone.now() + timedelta(days=days) if days else None
        if options["dry_run"]:
            self.stdout.write(f"Would create key {options['name']!r} on tier {tier.name} (dry run, nothing saved).")
            return
        api_key, secret = ApiKey.create_key(name=options["name"], tier=tier, owner=owner, expires_at=expires_at)
        self.stdout.write(self.style.SUCCESS(f"Created key {api_key.pk} ({api_key.masked}) on tier {tier.name}."))
        self.stdout.write("Copy it now, it is not stored and cannot be shown again:")
        self.stdout.write(secret)
