import asyncio
import os

from django.conf import settings
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "feedsite.settings")
django_app = get_asgi_application()
if settings.DEBUG:
    # Local runs serve the admin's static files from the ASGI app (production: a CDN or proxy).
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

    django_app = ASGIStaticFilesHandler(django_app)


class BoundedSync:
    """Run at most N sync (CPU-bound) requests at once per process, the rest wait their turn on
    the event loop, as gunicorn's sync workers do. Without it, every concurrent request gets its
    own thread and they all crawl together under the GIL (16 at once: each ~16x slower). Streams
    (SSE) are exempt: they mostly wait, on the event loop."""

    def __init__(self, app, limit: int, exempt: tuple[str, ...]) -> None:
        self.app, self.limit, self.exempt = app, limit, exempt
        self.semaphore: asyncio.Semaphore | None = None

    async def __call__(self, scope, receive, send) -> None:
        if self.limit <= 0 or scope["type"] != "http" or scope["path"].startswith(self.exempt):
            return await self.app(scope, receive, send)
        if self.semaphore is None:
            self.semaphore = asyncio.Semaphore(self.limit)
        async with self.semaphore:
            return await self.app(scope, receive, send)


application = BoundedSync(
    django_app,
    limit=int(os.environ.get("FEEDSITE_SYNC_REQUESTS_PER_PROCESS", "1")),
    exempt=("/api/feed/stream",),
)
