#!/usr/bin/env bash
# `terraform init` + `terraform validate` of each example under terraform/examples/ (and so of the
# module they call), against the real AWS provider schema.
#
# Needs the hashicorp/aws provider, which `terraform init` downloads from registry.terraform.io.
# This is a separate target because the machines this project's CI runs on reach only package
# registries: there, the provider cannot be downloaded, nor built (the Go module proxy serves no
# version of github.com/hashicorp/terraform-provider-aws newer than v1.60.0 from 2019, which speaks a
# plugin protocol Terraform 1.x no longer loads). Elsewhere: `make terraform-validate`.
# With TF_PLUGIN_DIR set (a `terraform providers mirror` folder), init uses it and goes offline.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/tools-terraform.sh >/dev/null

TERRAFORM="$PWD/.cache/tools/bin/terraform"
export CHECKPOINT_DISABLE=1
export TF_CLI_CONFIG_FILE="$PWD/.cache/tools/terraformrc"
export TF_IN_AUTOMATION=1
plugin_args=()
if [ -n "${TF_PLUGIN_DIR:-}" ]; then
  plugin_args=(-plugin-dir="$TF_PLUGIN_DIR")
fi

for example in terraform/examples/*/; do
  name="$(basename "$example")"
  echo "== terraform validate: $example"
  export TF_DATA_DIR="$PWD/.cache/terraform/$name" # .terraform/ outside the source tree
  (cd "$example" && "$TERRAFORM" init -backend=false -input=false -no-color "${plugin_args[@]}" >/dev/null)
  (cd "$example" && "$TERRAFORM" validate -no-color)
done
