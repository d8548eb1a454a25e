# The image docker-compose runs for the worker, the API, the set-up job and the simulator.
# Debian 12 and Python 3.11: the same as the development machines and CI.
FROM python:3.11-slim-bookworm

COPY pyproject.toml README.md /src/
COPY ioc /src/ioc
COPY streams /src/streams
COPY connectors /src/connectors
COPY dashboards /src/dashboards
COPY alerts /etc/ioc/alerts
RUN pip install --no-cache-dir /src \
    && rm -rf /src \
    && useradd --system --home-dir /var/lib/ioc --create-home ioc

# A writable working directory: faust creates its data directory (`<app id>-data`) here.
# No .env is read in the container: settings come from the environment (docker-compose).
WORKDIR /var/lib/ioc
USER ioc
ENV IOC_LOG_JSON=true \
    IOC_ALERT_RULES=/etc/ioc/alerts/rules \
    IOC_ALERT_RECIPIENTS=/etc/ioc/alerts/recipients.yaml \
    PYTHONUNBUFFERED=1
ENTRYPOINT ["ioc"]
CMD ["--help"]
