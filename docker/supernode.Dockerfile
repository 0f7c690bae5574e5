# syntax=docker/dockerfile:1
# SuperNode with the ClientApp's dependencies. A hospital's pod runs this image
# twice (k8s/base/client/deployment.yaml): as the SuperNode (entrypoint,
# --isolation process) and as the hospital's launcher sidecar
# (`python -m launcher.hospital`, docs/security.md), which runs each approved
# ClientApp with the packages installed here. The app code itself arrives with
# each run (FAB), so runtime dependency installation stays off.
#   docker build -f docker/supernode.Dockerfile -t $REGISTRY/fedheart/supernode:$APP_IMAGE_TAG .
# Ubuntu/Python 3.11 variant: the plain 1.42.0 tag is Alpine (musl, no torch
# wheels) or Python 3.13, outside the app's requires-python.
FROM flwr/supernode:1.42.0-py3.11-ubuntu24.04

LABEL org.opencontainers.image.title="fedheart-supernode" \
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

# The fedheart packages (fedheart, server_app, client_app) and the hospital's
# launcher (launcher/: its policy and audit code is this image's fedheart, never
# a bundle's), without dependencies.
COPY --chown=49999:49999 . /tmp/src
RUN python -m pip install --no-cache-dir --no-deps /tmp/src \
    && rm -rf /tmp/src

ENV FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
ENTRYPOINT ["flower-supernode"]
