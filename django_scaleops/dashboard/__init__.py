"""The operations dashboard in the Django admin (``/admin/scaleops/dashboard/``) and its history.

models.py (the unmanaged ``Dashboard`` the admin lists), admin.py (the page), panels.py (what each
panel shows), charts.py (inline SVG), sampler.py (per-minute history in Redis), sites.py (call
sites of slow statements), ready.py (the sampling hook); templates in
``templates/scaleops/dashboard/``. See docs/dashboard.md.
"""
