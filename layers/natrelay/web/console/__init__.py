"""The console (`/console`): server-rendered pages for admins — the overview, usage and
latency charts, recent requests with their timelines, keys and rows. One login (a
server-side page session), a CSRF token on every form, no script but the secret's copy
button. The routes and their roles are declared in web/__init__.py; pages.py checks
them."""
