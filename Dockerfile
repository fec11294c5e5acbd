# feedsite: one image for every process of the Procfile (proxy, web, stream, worker, beat) and
# the one-shot migrate. Slim, non-root; dependencies in their own cached layer; the static files
# collected at build time for the proxy to serve.
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

# Dependencies first: this layer is rebuilt only when pyproject.toml changes.
COPY pyproject.toml ./
RUN python -c "import tomllib; d = tomllib.load(open('pyproject.toml', 'rb')); print('\n'.join(d['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt

COPY . .
RUN pip install --no-deps . \
    && useradd --create-home --uid 10001 feedsite \
    && mkdir -p /app/var/run \
    && DEBUG=1 FEEDSITE_VAR_DIR=/app/var python manage.py collectstatic --noinput -v 0 \
    && chown -R feedsite /app/var
USER feedsite
ENV FEEDSITE_VAR_DIR=/app/var FEEDSITE_STATIC_ROOT=/app/var/static HOST=0.0.0.0 PORT=8000
EXPOSE 8000
# Alone, the image serves (proxy, web and stream in one container, as `python -m feedsite.serve`);
# docker-compose runs each process of the Procfile in a service of its own.
CMD ["python", "-m", "feedsite.serve"]
