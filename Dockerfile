FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    LETHE_HOME=/var/lib/lethe
WORKDIR /app

# The pinned PyTorch build first: it is the largest layer and changes least often.
RUN pip install torch==2.14.1 torchvision==0.29.1

COPY pyproject.toml README.md alembic.ini ./
COPY api ./api
COPY core ./core
COPY ml ./ml
COPY worker ./worker
COPY cli ./cli
COPY migrations ./migrations
RUN pip install . \
    && useradd --create-home --uid 1000 lethe \
    && mkdir -p /var/lib/lethe \
    && chown -R lethe /var/lib/lethe
USER lethe
EXPOSE 8000
CMD ["uvicorn", "api.main:app", "--host", "0.0.0.0", "--port", "8000"]
