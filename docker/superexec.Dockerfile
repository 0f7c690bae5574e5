# syntax=docker/dockerfile:1
# SuperExec with the ServerApp's dependencies: it runs the ServerApp next to
# the SuperLink (process isolation). The app code itself arrives with each
# run (FAB), so runtime dependency installation stays off.
#   docker build -f docker/superexec.Dockerfile -t $REGISTRY/fedheart/superexec:$APP_IMAGE_TAG .
# Ubuntu/Python 3.11 variant: the plain 1.42.0 tag is Alpine (musl, no torch
# wheels) or Python 3.13, outside the app's requires-python.
FROM flwr/superexec:1.42.0-py3.11-ubuntu24.04

LABEL org.opencontainers.image.title="fedheart-superexec" \
      org.opencontainers.image.version="1.42.0"

# Install as the images' non-root user into their virtual environment (/python/venv).
USER 49999:49999
WORKDIR /app

# CPU-only torch first, from the PyTorch CPU index (never the CUDA build),
# then the pinned dependencies (their torch pin is then already satisfied).
COPY --chown=49999:49999 docker/requirements-app.txt /tmp/requirements-app.txt
RUN python -m pip install --no-cache-dir \
        --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 \
    && python -m pip install --no-cache-dir -r /tmp/requirements-app.txt \
    && rm /tmp/requirements-app.txt

# The fedheart packages (fedheart, server_app, client_app) without dependencies.
COPY --chown=49999:49999 . /tmp/src
RUN python -m pip install --no-cache-dir --no-deps /tmp/src \
    && rm -rf /tmp/src

ENV FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
ENTRYPOINT ["flower-superexec"]
