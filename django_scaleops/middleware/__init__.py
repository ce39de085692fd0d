"""django-scaleops middleware."""
