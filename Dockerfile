# syntax=docker/dockerfile:1
# canaryd: multi-stage image. The builder downloads the dependencies' wheels and builds canaryd's;
# the final stage installs only those wheels (no index access) and runs as a non-root user.
# No compiler anywhere: every dependency ships binary wheels for glibc (slim is Debian, not Alpine),
# and --only-binary makes a missing wheel a clear build error instead of a silent source build.
#
#   make image                        (or: docker build -t ghcr.io/canaryd/canaryd:0.1.0 .)
#   docker run --rm -p 8080:8080 -v "$PWD/canaryd.yaml:/etc/canaryd/config.yaml:ro" ghcr.io/canaryd/canaryd:0.1.0
#
# The config must listen on 0.0.0.0:8080 inside a container (server.listen) to be reachable.

ARG PYTHON_VERSION=3.11

# ---- builder: wheels for every dependency, then for canaryd ------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# The dependency layer depends on pyproject.toml alone: editing canaryd's source reuses it, and only a
# change of pyproject.toml downloads the dependencies again.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > requirements.txt \
 && pip wheel --only-binary=:all: --wheel-dir /wheels -r requirements.txt
# canaryd itself (pure Python): --no-deps, its dependencies are already wheels above.
COPY README.md ./
COPY daemon/ ./daemon/
RUN pip wheel --no-deps --wheel-dir /wheels .

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
