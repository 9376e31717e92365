# The one image of every Courier service: api, worker, flower, simulator (docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml ./
COPY config ./config
COPY workers ./workers
COPY tasks ./tasks
COPY producers ./producers
RUN pip install . \
    && useradd --create-home --uid 10001 courier

USER courier
EXPOSE 8000 5555 9100
CMD ["courier", "api", "--host", "0.0.0.0"]
