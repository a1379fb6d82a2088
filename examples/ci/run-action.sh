#!/usr/bin/env bash
# The steps of both CI recipes (gitlab-ci.yml, github-actions.yml); tests/remote.rs runs this very
# script against a TLS engine and against the local one.
#
#   PACKS=examples/packs ACTION=hello.greet_shell OUTCOME=outcome.json examples/ci/run-action.sh [RUN ARGS...]
#
# The engine is found the way the docker CLI finds it (DOCKER_HOST, DOCKER_TLS_VERIFY,
# DOCKER_CERT_PATH, docker contexts). Optional: PACKBOX (the binary, default `packbox`),
# PACKBOX_RUNTIMES (the runtimes to build, e.g. `shell`), BASE_ROOTFS (`SUITE=FILE ...`, Debian
# root file system tarballs to import as packbox/base:SUITE where the engine lacks them).
# The outcome JSON is written even when the action fails; the script exits with packbox's code.
set -euo pipefail

packbox=${PACKBOX:-packbox}
packs=${PACKS:?PACKS: the folder of packs}
action=${ACTION:?ACTION: pack.action to run}
outcome=${OUTCOME:-outcome.json}

echo "--- images the engine lacks, built through its API" >&2
bases=()
for base in ${BASE_ROOTFS:-}; do
  bases+=(--base-rootfs "$base")
done
"$packbox" images build "${bases[@]}"

echo "--- what packbox will run with" >&2
"$packbox" doctor >&2

echo "--- $action" >&2
status=0
"$packbox" run --packs "$packs" "$action" --json "$@" >"$outcome" || status=$?
echo "outcome ($status) in $outcome" >&2
exit "$status"
