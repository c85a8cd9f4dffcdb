# Gallery API container image.
#
#   docker build -t gallery-api .                      (python:3.12-slim by default)
#   docker build --build-arg PYTHON_IMAGE=python:3.13-slim -t gallery-api .
#
# Dependencies come only from requirements.lock (exact versions and sha256 hashes, made by
# `make lock`), as prebuilt wheels: no compiler is needed in either stage.
ARG PYTHON_IMAGE=python:3.12-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
COPY requirements.lock /tmp/requirements.lock
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --require-hashes --no-deps --only-binary=:all: \
        -r /tmp/requirements.lock \
    && printf '#!/bin/sh\nexec /opt/venv/bin/python -m app "$@"\n' >/opt/venv/bin/gallery \
    && chmod 755 /opt/venv/bin/gallery

FROM ${PYTHON_IMAGE} AS runtime
# Production by default: the app then refuses to start without a real SECRET_KEY.
# MALLOC_MMAP_THRESHOLD_: glibc's fixed mmap threshold, so freed password-hash memory goes
# back to the system (app/cli.py sets it for the workers outside a container too).
ENV PATH=/opt/venv/bin:$PATH \
    MALLOC_MMAP_THRESHOLD_=262144 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONPATH=/app \
    ENVIRONMENT=production \
    LOG_FORMAT=json \
    HOST=0.0.0.0 \
    PORT=8000 \
    DATABASE_URL=sqlite+aiosqlite:////app/data/gallery.db \
    PROMETHEUS_MULTIPROC_DIR=/tmp/gallery-metrics
RUN groupadd --system --gid 10001 gallery \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin gallery \
    && mkdir -p /app/data \
    && chown 10001:10001 /app/data
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# Code stays owned by root: the server cannot rewrite itself.
COPY alembic.ini /app/alembic.ini
COPY migrations /app/migrations
COPY app /app/app
# Numeric, so the platform can verify it is not root without reading /etc/passwd.
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "app.ops.probe"]
# Exec form, no shell in between: the server is PID 1 and receives SIGTERM itself.
ENTRYPOINT ["python", "-m", "app"]
CMD ["serve"]
