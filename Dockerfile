# syntax=docker/dockerfile:1
# One image for all six invsaga processes; the command picks the process:
#   python -m coordinator | python -m services.<warehouse|inventory|allocation|logistics|notify>
#   invsaga migrate        (the schema migrations, run by deploy/k8s's Job)
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/invsaga
WORKDIR /src
# Every dependency is pinned in pyproject.toml and ships manylinux wheels, so no compiler is
# needed. README.md* is optional (the glob lets the build go on without it).
COPY pyproject.toml README.md* ./
COPY invsaga ./invsaga
COPY coordinator ./coordinator
COPY services ./services
# The root filesystem is read-only at run time: compile the bytecode now, once.
RUN /opt/invsaga/bin/pip install --no-compile . \
    && /opt/invsaga/bin/python -m compileall -q -j 0 /opt/invsaga

FROM ${PYTHON_IMAGE} AS runtime
# A fixed numeric id, so that Kubernetes' runAsNonRoot can verify it without a passwd lookup.
RUN groupadd --system --gid 10001 invsaga \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin invsaga \
    && mkdir -p /var/lib/invsaga /etc/invsaga/config \
    && chown 10001:10001 /var/lib/invsaga
COPY --from=build /opt/invsaga /opt/invsaga
COPY config/invsaga.yaml /etc/invsaga/config/invsaga.yaml
ENV PATH=/opt/invsaga/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    INVSAGA_CONFIG=/etc/invsaga/config/invsaga.yaml \
    INVSAGA_DATA_DIR=/var/lib/invsaga
WORKDIR /var/lib/invsaga
USER 10001:10001
# gRPC 50050-50055 (coordinator, warehouse, inventory, allocation, logistics, notify) and
# their Prometheus metrics on gRPC port + 1000.
EXPOSE 50050-50055 51050-51055
# Python is PID 1 and handles SIGTERM itself: health goes NOT_SERVING, in-flight calls finish
# within INVSAGA_GRACE_PERIOD, then it exits.
CMD ["python", "-m", "coordinator"]
