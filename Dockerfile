# The pipeline image used by docker-compose.yml (worker, migrations, simulator).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY models models
COPY pipeline pipeline
COPY reports reports
COPY migrations migrations
RUN pip install --no-cache-dir .
ENTRYPOINT ["finops"]
