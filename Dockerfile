# Two stages: `build` installs PyTorch and Lethe into a virtual environment; the runtime stage copies
# only that environment, so no build tooling, sources or caches ship, and it runs as a non-root user.
FROM python:3.11-slim AS build

ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# The pinned PyTorch build first: it is the largest layer and changes least often.
RUN pip install torch==2.14.1 torchvision==0.29.1

# Every package pyproject.toml installs (tests/e2e/test_image.py checks this list against it).
WORKDIR /src
COPY pyproject.toml README.md ./
COPY api ./api
COPY core ./core
COPY ml ./ml
COPY worker ./worker
COPY cli ./cli
COPY client ./client
COPY migrations ./migrations
RUN pip install .

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/opt/venv/bin:$PATH \
    LETHE_HOME=/var/lib/lethe
# The artifacts volume is mounted at LETHE_HOME; Docker seeds a new named volume with this owner.
RUN useradd --create-home --uid 1000 lethe \
    && mkdir -p /var/lib/lethe \
    && chown lethe:lethe /var/lib/lethe
COPY --from=build /opt/venv /opt/venv
WORKDIR /home/lethe
USER lethe
EXPOSE 8000
CMD ["uvicorn", "api.main:app", "--host", "0.0.0.0", "--port", "8000"]
