# feedsite: one image for every process of the Procfile (proxy, web, stream, worker, beat) and
# the one-shot migrate. Slim, non-root; dependencies in their own cached layer; the static files
# collected at build time for the proxy to serve. The folder of sockets is the feedsite user's
# alone (0700, kept by the compose volume that starts from it): whoever reaches web.sock or
# stream.sock is the trusted proxy to Django.
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

# Dependencies first: this layer is rebuilt only when the lock changes. The runtime lock (`make
# lock`) holds the versions CI tested, less the dev tools, each file's hash checked.
COPY requirements-runtime.lock ./
RUN pip install --require-hashes -r requirements-runtime.lock

COPY . .
RUN pip install --no-deps --no-build-isolation . \
    && useradd --create-home --uid 10001 feedsite \
    && mkdir -p /app/var/run \
    && DEBUG=1 FEEDSITE_VAR_DIR=/app/var python manage.py collectstatic --noinput -v 0 \
    && chown -R feedsite /app/var \
    && chmod 700 /app/var/run
USER feedsite
ENV FEEDSITE_VAR_DIR=/app/var FEEDSITE_STATIC_ROOT=/app/var/static HOST=0.0.0.0 PORT=8000
EXPOSE 8000
# Alone, the image serves (proxy, web and stream in one container, as `python -m feedsite.serve`);
# docker-compose runs each process of the Procfile in a service of its own.
CMD ["python", "-m", "feedsite.serve"]
