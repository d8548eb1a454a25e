# The image docker-compose runs for the worker, the API, the set-up job and the simulator.
# Debian 12 and Python 3.11: the same as the development machines and CI.

# Build stage: the wheel, as users install it (package data included: migrations, default
# alert rules, dashboards and their provisioning, connector templates).
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY ioc ioc
COPY streams streams
COPY connectors connectors
COPY dashboards dashboards
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# Runtime stage: only the installed wheel and its dependencies, no source tree.
FROM python:3.11-slim-bookworm
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir /wheels/ioc_monitor-*.whl \
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
