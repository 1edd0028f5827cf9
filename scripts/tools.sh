#!/usr/bin/env bash
# Builds the deployment tools the tests use into .cache/tools/bin (git-ignored), from the Go module
# proxy: helm (for `helm lint` and `helm template` in tests/deploy). Skips a tool already built at
# the pinned version. Needs Go. Python-side tools (hadolint, kubernetes-validate) come from the
# dev extra of pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."

HELM_VERSION=v3.19.0
# The Kubernetes version of helm's k8s.io modules (v0.34 -> 1.34): `helm template` without
# --kube-version renders for it, as the released binaries do (a plain go install says 1.20).
HELM_K8S_MAJOR=1
HELM_K8S_MINOR=34

BIN="$PWD/.cache/tools/bin"
mkdir -p "$BIN"

if [ -x "$BIN/helm" ] && [ "$("$BIN/helm" version --template '{{.Version}}')" = "$HELM_VERSION" ]; then
  echo "helm $HELM_VERSION: $BIN/helm"
else
  command -v go >/dev/null || { echo "tools.sh: go is needed to build helm (https://go.dev/dl/)" >&2; exit 1; }
  echo "building helm $HELM_VERSION with go install (a few minutes the first time) ..."
  start=$(date +%s)
  ldflags="-w -s -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
    ldflags+=" -X $pkg.k8sVersionMajor=$HELM_K8S_MAJOR -X $pkg.k8sVersionMinor=$HELM_K8S_MINOR"
  done
  GOBIN="$BIN" GOFLAGS=-mod=mod go install -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  echo "helm $("$BIN/helm" version --template '{{.Version}}') built in $(( $(date +%s) - start )) s: $BIN/helm"
fi
