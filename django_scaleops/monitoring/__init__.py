"""Query monitoring: timings, percentiles, slow queries, N+1 hints, health, and their endpoints."""
