# syntax=docker/dockerfile:1
# The gateway image: gunicorn + uvicorn workers (deploy/gunicorn.conf.py), non-root, no build tools.
#
#   docker build -t gateway .
#   docker run -e GATEWAY_DATABASE_URL=... -e GATEWAY_BROKER_URL=redis://... -p 3000:3000 gateway
#   docker run ... gateway gateway migrate        (the same image runs the migration: CMD is replaceable)
#
# Stage 1 builds a virtualenv with the package and its dependencies (all of them ship wheels); stage 2 copies
# only that virtualenv onto a clean slim base.

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/gateway
WORKDIR /src
# Dependencies first, from pyproject alone, so a code change does not reinstall them.
COPY pyproject.toml README.md ./
RUN mkdir gateway && touch gateway/__init__.py \
    && /opt/gateway/bin/pip install . \
    && /opt/gateway/bin/pip uninstall -y gateway
COPY gateway ./gateway
# gateway/web/static/live.js links to the JS client's source; the wheel gets a copy of it.
COPY clients/js/live.js ./clients/js/live.js
RUN /opt/gateway/bin/pip install --no-deps . \
    && /opt/gateway/bin/python -m compileall -q /opt/gateway/lib

FROM python:${PYTHON_VERSION}-slim
RUN groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid gateway --no-create-home --home-dir /nonexistent gateway
COPY --from=build /opt/gateway /opt/gateway
WORKDIR /app
COPY deploy/gunicorn.conf.py deploy/gunicorn.conf.py
COPY examples/models models
ENV PATH=/opt/gateway/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GATEWAY_MODELS=/app/models \
    GATEWAY_LOG_FORMAT=json \
    GATEWAY_CREATE_TABLES=false \
    PORT=3000
USER 10001:10001
EXPOSE 3000
# Liveness only (the process answers); readiness (/readyz) is the orchestrator's or load balancer's call.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-m", "gateway.ops.probe", "/healthz"]
# gunicorn is PID 1: it handles SIGTERM itself (drain, then exit) and reaps its workers.
STOPSIGNAL SIGTERM
CMD ["gunicorn", "-c", "/app/deploy/gunicorn.conf.py"]
