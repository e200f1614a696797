"""The operator's console: server-rendered pages at ``/`` on the API's own port.

Templates (Jinja2) and one hand-written script (static/console.js, no build step, no CDN)
use the same rows, service functions and role checks as the JSON API; a browser signs in
once with its token and then carries a signed HttpOnly session cookie (session.py).
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from api_service.console import actions, pages
from api_service.console.web import HERE


def install_console(app: FastAPI) -> None:
    app.include_router(pages.router)
    app.include_router(actions.router)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="console-static")
