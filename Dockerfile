# EventStream: the API and the worker in one slim image, running as a non-root user.
#   docker build -t eventstream .
#   docker run eventstream                                  # the API (needs EVENTSTREAM_REDIS_URL, ...)
#   docker run eventstream eventstream worker myapp:app     # a worker
# Your handlers: build FROM this image and COPY your module into /app.

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
USER eventstream:eventstream
EXPOSE 8000
# Probes the API: plain Python, no curl in the image. A worker container overrides it
# (compose.yaml checks the worker's heartbeat in Redis instead).
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
# Listening on every interface needs API keys (`eventstream keys create`), or --insecure
# on a private network: the API refuses to start open to the network otherwise.
CMD ["eventstream", "api", "--host", "0.0.0.0", "--port", "8000"]
