# Herald's image: docker build -t herald:0.1.0 .  (deploy/deployment.yaml runs herald:<pyproject version>)
# PYTHON_IMAGE is any Debian-like image with python3 and venv (the tests build one with debootstrap:
# tests/cluster/build-base-image.sh).
# Two stages: the builder installs Herald and its pinned dependencies (constraints.txt, no dev
# extras) into a virtualenv; the final stage carries that virtualenv only (pip and setuptools removed).
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
WORKDIR /src
# Behind a TLS-inspecting proxy, put its CA bundle in the build context as pip-ca.pem (git ignores
# it): this stage's pip trusts it; the final stage never sees it.
COPY pyproject.toml constraints.txt README.md pip-ca.pe[m] ./
COPY operator/ operator/
# A regular (non-editable) install: the source tree stays behind in this stage.
RUN if [ -f pip-ca.pem ]; then export PIP_CERT=/src/pip-ca.pem; fi \
 && /opt/venv/bin/pip install -c constraints.txt . \
 && /opt/venv/bin/pip uninstall --yes pip setuptools wheel

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="herald" \
      org.opencontainers.image.description="Kubernetes operator delivering Qovery-style deployment webhooks" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
COPY --from=builder /opt/venv /opt/venv
# The user must exist: kopf asks for its name (getpwuid), and a uid without a passwd entry fails
# the operator at start.
RUN echo 'herald:x:65532:65532:herald:/tmp:/usr/sbin/nologin' >> /etc/passwd \
 && echo 'herald:x:65532:' >> /etc/group
# A numeric non-root user, so the kubelet can verify runAsNonRoot; nothing in the image is writable
# by it, and the Deployment mounts an emptyDir at /tmp (HOME) over a read-only root filesystem.
USER 65532:65532
# 8080: /healthz and /readyz (probes); 9090: /metrics (Prometheus).
EXPOSE 8080 9090
ENTRYPOINT ["herald", "run"]
