from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.monitoringapp.styles import run_query_styles, statement_count


class Command(BaseCommand):
    help = "Run the five query styles and print how many queries Django captured."

    def handle(self, *args: Any, **options: Any) -> None:
        with CaptureQueriesContext(connection) as captured:
            run_query_styles()
        self.stdout.write(str(statement_count(captured)))
