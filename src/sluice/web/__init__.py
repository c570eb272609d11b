"""The dashboard (`sluice web`): FastAPI pages and a JSON API over one workspace, read-only by default.

An engine above the API: it reads through `sluice.api` (the Workspace and `api.views`) like the CLI does and
never imports the store. dashboard.py holds the one shared object, api.py the JSON routes, pages.py the HTML
ones (templates/, static/: htmx vendored, no build step), auth.py the token and cross-site rules, cache.py
the shared snapshots that keep a million-job campaign cheap to watch, server.py the start-up.
"""
