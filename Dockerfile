# feedsite: one image for every process (web = Caddy + granian + the stream server, worker,
# beat, migrate). Slim, non-root; dependencies in their own cached layer.
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
    && mkdir -p /app/var && chown -R feedsite /app/var
USER feedsite
ENV FEEDSITE_VAR_DIR=/app/var HOST=0.0.0.0 PORT=8000
EXPOSE 8000
# The web process by default; compose runs the others from the same image.
CMD ["python", "-m", "feedsite.serve"]
