"""The ASGI application: in the production layout (feedsite.serve) it serves the SSE stream,
/api/feed/stream/, on the event loop with no thread per client. Request/response endpoints are
served by the WSGI server (feedsite.wsgi) behind the same proxy."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "feedsite.settings")
application = get_asgi_application()
