# The image docker-compose runs for the worker, the API, the set-up job and the simulator.
# Debian 12 and Python 3.11: the same as the development machines and CI.
# Reproducible: every package comes from deploy/*.lock (versions and hashes, made by
# deploy/lock.sh); pip refuses anything unlisted or whose hash differs.
# Offline (an isolated network): fill deploy/wheelhouse/ first (README, Production), then
#   docker compose build --build-arg PIP_NO_INDEX=1
# Build stage: the wheel, as users install it (package data included: migrations, default
# alert rules, dashboards and their provisioning, connector templates).
FROM python:3.11-slim-bookworm AS build
ARG PIP_NO_INDEX=0
ENV PIP_NO_INDEX=${PIP_NO_INDEX} PIP_FIND_LINKS=/wheelhouse PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN --mount=type=bind,source=deploy/build-requirements.lock,target=/tmp/build.lock \
    --mount=type=bind,source=deploy/wheelhouse,target=/wheelhouse \
    pip install --no-cache-dir --require-hashes --only-binary=:all: -r /tmp/build.lock
COPY pyproject.toml README.md ./
COPY ioc ioc
COPY streams streams
COPY connectors connectors
COPY dashboards dashboards
RUN pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /wheels .

# Runtime stage: the locked dependencies, then the wheel without its own resolution; no
# source tree.
FROM python:3.11-slim-bookworm
ARG PIP_NO_INDEX=0
ENV PIP_NO_INDEX=${PIP_NO_INDEX} PIP_FIND_LINKS=/wheelhouse PIP_DISABLE_PIP_VERSION_CHECK=1
RUN --mount=type=bind,source=deploy/requirements.lock,target=/tmp/requirements.lock \
    --mount=type=bind,source=deploy/wheelhouse,target=/wheelhouse \
    --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --require-hashes --only-binary=:all: -r /tmp/requirements.lock \
    && pip install --no-cache-dir --no-deps --no-index /wheels/ioc_monitor-*.whl \
    && pip check \
    && useradd --system --home-dir /var/lib/ioc --create-home ioc

# A writable working directory: faust creates its data directory (`<app id>-data`) here.
# No .env is read in the container: settings come from the environment (docker-compose).
# The alert rules and recipients are the package's own unless IOC_ALERT_RULES and
# IOC_ALERT_RECIPIENTS point elsewhere (docker-compose mounts the checkout's copy).
WORKDIR /var/lib/ioc
USER ioc
ENV IOC_LOG_JSON=true \
    PYTHONUNBUFFERED=1
ENTRYPOINT ["ioc"]
CMD ["--help"]
