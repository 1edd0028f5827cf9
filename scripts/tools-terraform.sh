#!/usr/bin/env bash
# The tools of the Terraform tests (tests/deploy/test_terraform.py), built once into the git-ignored
# .cache/tools; a second run finds them and does nothing.
#   terraform  built from the Go module proxy with `go install`. 1.5.7 is the last MPL-2.0 release,
#              and the last whose go.mod has no replace directives, which `go install pkg@version`
#              refuses; the module needs >= 1.5. About 5 minutes on 2 cores, once.
#   checkov    from PyPI, in a virtualenv of its own: its dependency tree is large and pins its own
#              HCL parser, so it stays out of the project's .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS=.cache/tools
TERRAFORM_VERSION=1.5.7
CHECKOV_VERSION=3.3.30
export CHECKPOINT_DISABLE=1 # no version check against HashiCorp's servers
mkdir -p "$TOOLS/bin"
touch "$TOOLS/terraformrc"
export TF_CLI_CONFIG_FILE="$PWD/$TOOLS/terraformrc" # no user settings (plugin caches, mirrors) leak in

have="$("$TOOLS/bin/terraform" version 2>/dev/null | sed -n 1p || true)"
if [ "$have" != "Terraform v$TERRAFORM_VERSION" ]; then
  command -v go >/dev/null || { echo "tools-terraform: Go is needed to build terraform" >&2; exit 1; }
  echo "tools-terraform: building terraform $TERRAFORM_VERSION from the Go module proxy (a few minutes, once)"
  GOBIN="$PWD/$TOOLS/bin" go install "github.com/hashicorp/terraform@v$TERRAFORM_VERSION"
fi

have="$("$TOOLS/checkov-venv/bin/checkov" --version 2>/dev/null || true)"
if [ "$have" != "$CHECKOV_VERSION" ]; then
  echo "tools-terraform: installing checkov $CHECKOV_VERSION into $TOOLS/checkov-venv"
  rm -rf "$TOOLS/checkov-venv"
  python3 -m venv "$TOOLS/checkov-venv"
  "$TOOLS/checkov-venv/bin/pip" install --quiet --upgrade pip
  "$TOOLS/checkov-venv/bin/pip" install --quiet "checkov==$CHECKOV_VERSION"
fi

"$TOOLS/bin/terraform" version | sed -n 1p
echo "checkov $("$TOOLS/checkov-venv/bin/checkov" --version)"
