# syntax=docker/dockerfile:1
# SuperLink: the official image, re-published to the project's ECR repository
# (no Docker Hub pulls from the clusters) with a numeric non-root user, so that
# Kubernetes' runAsNonRoot can verify it. The SuperLink needs no app code.
#   docker build -f docker/superlink.Dockerfile -t $REGISTRY/fedheart/superlink:1.42.0 .
# The plain tag (Alpine) is enough: the SuperLink runs no app code.
FROM flwr/superlink:1.42.0

LABEL org.opencontainers.image.title="fedheart-superlink" \
      org.opencontainers.image.version="1.42.0"

# "app" (uid/gid 49999) is the flwr/* images' own non-root user.
USER 49999:49999
WORKDIR /app
ENTRYPOINT ["flower-superlink"]
