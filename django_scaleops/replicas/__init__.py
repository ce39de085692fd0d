"""Database routing: primary/replica router, replica health, read-your-writes and failover.

The public entry points are re-exported from ``django_scaleops.routers``.
"""
