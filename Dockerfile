# syntax=docker/dockerfile:1
# canaryd: multi-stage image. The builder turns canaryd and its dependencies into wheels; the final
# stage installs only those wheels (no compiler, no index access) and runs as a non-root user.
#
#   docker build -t ghcr.io/canaryd/canaryd:0.1.0 .
#   docker run --rm -p 8080:8080 -v "$PWD/canaryd.yaml:/etc/canaryd/config.yaml:ro" ghcr.io/canaryd/canaryd:0.1.0
#
# The config must listen on 0.0.0.0:8080 inside a container (server.listen) to be reachable.

ARG PYTHON_VERSION=3.11

# ---- builder: wheels for canaryd and every dependency -------------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# numpy, scipy and aiohttp ship binary wheels for this platform; the compiler is only a fallback for
# a dependency without one, and never reaches the final image.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# pyproject first, so the dependency layer is rebuilt only when dependencies change
COPY pyproject.toml README.md ./
COPY daemon/ ./daemon/
RUN pip wheel --wheel-dir /wheels .

# ---- runtime -------------------------------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm
LABEL org.opencontainers.image.title="canaryd" \
      org.opencontainers.image.description="Automated canary analysis for Kubernetes" \
      org.opencontainers.image.source="https://github.com/canaryd/canaryd"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# Install from the builder's wheels only; the bind mount keeps them out of the image's layers.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels canaryd \
 && groupadd --system --gid 10001 canaryd \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin canaryd
# Numeric, so that Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
EXPOSE 8080
# No curl in slim images: Python's standard library asks /healthz. Kubernetes uses its own probes
# (deploy/deployment.yaml); this one is for docker and compose.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ.get('CANARYD_HEALTHCHECK_URL', 'http://127.0.0.1:8080/healthz'), timeout=3)"]
ENTRYPOINT ["canaryd"]
CMD ["run", "--config", "/etc/canaryd/config.yaml"]
