#!/usr/bin/env bash
# Reads the parameter document (one JSON line) from stdin and prints a JSON greeting.
set -euo pipefail
params=$(cat)
name=$(jq -r '.name // "world"' <<<"$params")
jq -cn --arg name "$name" --arg shell "bash ${BASH_VERSION}" \
  '{greeting: ("Hello, " + $name + "!"), runtime: $shell}'
