# The image docker-compose runs for the worker, the API and the set-up job.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY ioc ioc
COPY streams streams
COPY connectors connectors
COPY dashboards dashboards
RUN pip install --no-cache-dir . && useradd --system ioc
USER ioc
ENV IOC_LOG_JSON=true
ENTRYPOINT ["ioc"]
