# eventfleet: the fleet supervisor (`eventfleet run`) in a slim, non-root image.
#   docker build -t eventfleet .
#   docker run -v "$PWD/pipeline.toml:/etc/eventfleet/pipeline.toml:ro" -v "$PWD/schema.avsc:/etc/eventfleet/schema.avsc:ro" \
#     -p 9400:9400 eventfleet --workers 2
# Arguments after the image name are appended to `eventfleet run --config /etc/eventfleet/pipeline.toml`.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ---- builder: the wheel, and a venv holding it with every dependency ----------------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY consumer ./consumer
# Every optional extra but dev (msk where the project has it) goes in: the image is the
# one thing deployed. --only-binary: dependencies come as wheels, so no compiler is needed here or
# ends up in the final image.
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN extras="$(python -c 'import tomllib; x = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]; print(",".join(sorted(k for k in x if k != "dev")))')" \
 && /opt/venv/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/venv/bin/pip install --only-binary=:all: "$(ls /wheels/eventfleet-*.whl)[${extras}]" \
 && /opt/venv/bin/eventfleet --version

# ---- final: the venv, tini and nothing else ---------------------------------------------------
FROM ${PYTHON_IMAGE}
# tini is PID 1: it forwards SIGTERM to the supervisor (which flushes, commits and exits 0) and
# reaps orphans. Not `tini -g`: the supervisor stops its workers itself, in order.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini=0.19.0-1* \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 eventfleet \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin eventfleet \
 && mkdir -p /etc/eventfleet /var/lib/eventfleet \
 && chown 10001:10001 /var/lib/eventfleet
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# /var/lib/eventfleet: a writable home for a SQLite sink (mount a volume there).
WORKDIR /var/lib/eventfleet
USER 10001:10001
EXPOSE 9400
# /healthz is 200 while every worker heartbeats. Python's urllib: no curl in the image.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9400/healthz', timeout=4)"]
ENTRYPOINT ["tini", "--", "eventfleet", "run", "--config", "/etc/eventfleet/pipeline.toml"]
