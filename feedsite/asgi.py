import os

from django.conf import settings
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "feedsite.settings")
application = get_asgi_application()
if settings.DEBUG:
    # Local runs serve the admin's static files from the ASGI app (production: a CDN or proxy).
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

    application = ASGIStaticFilesHandler(application)
