# The smithers-time-travel worker (see temporal-dev.yml).
FROM python:3.11-slim

# git: the sandbox backend of rewinds (jj is used when its binary is present too).
RUN apt-get update \
    && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/*

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# Only what the package needs, so that editing tests or docs keeps the install layer cached.
COPY pyproject.toml README.md worker.py ./
COPY timetravel ./timetravel
COPY activities ./activities
COPY workflows ./workflows
RUN pip install .

# The SQLite database lives on a volume (TIMETRAVEL_DATABASE_URL=sqlite:////data/smithers.db).
RUN mkdir -p /data
VOLUME ["/data"]

# SIGTERM (docker stop) makes the worker finish in-flight activities and exit.
CMD ["timetravel", "worker"]
