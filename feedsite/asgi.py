"""The ASGI application: in the production layout (feedsite.serve) it serves the SSE stream,
/api/feed/stream/ (feeds.stream: a plain ASGI application, no thread or database connection per
client). Anything else that reaches it goes to Django; request/response endpoints are served by
the WSGI server (feedsite.wsgi) behind the same proxy."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "feedsite.settings")
django_application = get_asgi_application()

from feeds import stream  # noqa: E402 - after Django is set up


async def application(scope, receive, send):
    if scope["type"] == "http" and scope["path"] == stream.PATH:
        return await stream.application(scope, receive, send)
    return await django_application(scope, receive, send)
