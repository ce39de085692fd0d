"""Create the demo's admin user once, with a generated password printed that one time.

The password goes to this command's standard output only: never to a log, never stored in clear.
A later run leaves the user (and its password) alone and says how to set a new one.
"""

from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser
from django.db import IntegrityError, transaction


class Command(BaseCommand):
    help = "Create the demo superuser (once) with a generated password, printed only when it is made."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default="demo", help="default: %(default)s")
        parser.add_argument("--database", default="default")

    def handle(self, *args: Any, **options: Any) -> None:
        username, db = options["username"], options["database"]
        users = get_user_model()._default_manager.db_manager(db)
        if not users.filter(username=username).exists():
            password = secrets.token_urlsafe(12)
            try:
                with transaction.atomic(using=db):
                    users.create_superuser(username=username, email=f"{username}@example.com", password=password)
            except IntegrityError:
                pass  # a run at the same moment made it
            else:
                self.stdout.write(f"Admin login: {username} / {password}  (shown once: note it now)")
                return
        self.stdout.write(
            f"Admin login: {username} (its password was printed when it was made; "
            f"`python manage.py changepassword {username}` sets a new one)"
        )
