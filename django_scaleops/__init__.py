"""django-scaleops: the operational toolkit for Django + PostgreSQL + Redis backends."""

__version__ = "0.1.0.dev0"
