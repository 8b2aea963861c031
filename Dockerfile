# syntax=docker/dockerfile:1
#
# Production image for broadcaster. Build from the repository root:
#   docker build -t broadcaster:0.1.0 .
# The wheel packages migrations/ as broadcaster/migrations, so the final image holds only the
# virtual environment: no repository checkout, no build tools.

# Pinned to a patch release and Debian release; bump both deliberately.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# ---------------------------------------------------------------- builder
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src

# Only what the wheel is built from (see .dockerignore).
COPY pyproject.toml README.md ./
COPY src ./src
COPY migrations ./migrations

RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install /wheels/broadcaster-*.whl \
 && /opt/venv/bin/broadcaster --help >/dev/null

# ---------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE}

# Fixed numeric ids so Kubernetes can verify runAsNonRoot.
RUN groupadd --system --gid 10001 broadcaster \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin broadcaster

COPY --from=builder /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    BROADCASTER_HOST=0.0.0.0 \
    BROADCASTER_PORT=8000

# Owned by root and not writable by the service user: without DATABASE_URL the embedded
# PostgreSQL (a development convenience) cannot start here and the command fails instead.
WORKDIR /app
USER 10001:10001

EXPOSE 8000

# The same check for `api` (its port's /healthz) and `dispatcher` (its metrics port, where
# BROADCASTER_METRICS_PORT is set). Kubernetes uses the manifests' probes instead.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["broadcaster", "healthcheck"]

ENTRYPOINT ["broadcaster"]
CMD ["api"]
