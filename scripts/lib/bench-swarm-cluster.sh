#!/usr/bin/env bash
# `scripts/bench-swarm cluster`: the swarm backend on a Swarm of three Docker-in-Docker nodes
# (a manager and two workers, with a registry every node reaches; scripts/test-swarm cluster).
# Writes bench/swarm-cluster.md and prints it. Run through scripts/bench-swarm.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
. scripts/lib/settle.sh
runs=${RUNS:-20}
load=${LOAD:-100}
concurrency=${CONCURRENCY:-8}

scripts/ensure-docker
if [ -z "${PACKBOX:-}" ]; then
  echo "==> building packbox (release) and the images" >&2
  cargo build --release --quiet --bin packbox
  PACKBOX=target/release/packbox
fi
PACKBOX=$PACKBOX scripts/build-images >/dev/null 2>&1
pb=$(realpath "$PACKBOX")
work=$(mktemp -d)
# A cluster of its own (not the tests'), taken down at the end whatever happens.
name=bench-$(printf %s "$root" | sha256sum | cut -c1-8)
lease="$$-bench"
echo "==> bringing up cluster $name (a manager and two workers)" >&2
up_started=$(date +%s.%N)
env_lines=$(scripts/test-swarm cluster acquire "$name" "$lease")
up_s=$(awk -v a="$(date +%s.%N)" -v b="$up_started" 'BEGIN { printf "%.0f", a - b }')
trap 'scripts/test-swarm cluster release "$name" "$lease" || true; rm -rf "$work"' EXIT
eval "$env_lines"
export PACKBOX_STATE_DIR=$work/state
mkdir -p bench
out=bench/swarm-cluster.md

packs=$root/tests/fixtures
registry=$PACKBOX_CLUSTER_REGISTRY
engine_profile="--seccomp engine-default --allow-weaker-sandbox"
run_on() { printf '%s --backend swarm --registry %s --placement %s run --packs %s bench.noop %s' \
  "$pb" "$registry" "$1" "$packs" "$engine_profile"; }
on_manager=$(run_on node.role==manager)
on_worker=$(run_on node.role==worker)

median() { jq -r ".results[$2].median" "$1"; }
ms() { awk -v s="$1" 'BEGIN { printf "%.0f ms", s * 1000 }'; }
diff_ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%+.0f ms", (a - b) * 1000 }'; }
load_average() { cut -d' ' -f1-3 /proc/loadavg; }

echo "==> warming up: probes, the pack image, its push, a pull on each worker" >&2
$on_manager >/dev/null 2>&1
for worker in $PACKBOX_CLUSTER_WORKERS; do
  $(run_on "node.hostname==$worker") >/dev/null 2>&1
done

echo "==> 1. one run of a trivial action on the manager and on a worker ($runs runs each)" >&2
load_before=$(settle)
hyperfine --shell=bash --warmup 2 --runs "$runs" --export-json "$work/overhead.json" \
  -n "packbox, swarm backend, on the manager" "$on_manager" \
  -n "packbox, swarm backend, on a worker" "$on_worker" >&2
manager_s=$(median "$work/overhead.json" 0)
worker_s=$(median "$work/overhead.json" 1)
load_after_1=$(load_average)

echo "==> 2. $load runs at concurrency $concurrency placed on the workers" >&2
mkdir -p "$work/load"
load_before_2=$(settle)
started=$(date +%s.%N)
seq "$load" | xargs -P"$concurrency" -I{} bash -c \
  "$on_worker --json >'$work/load/{}.json' 2>'$work/load/{}.err' || true"
elapsed=$(awk -v a="$(date +%s.%N)" -v b="$started" 'BEGIN { printf "%.1f", a - b }')
load_after_2=$(load_average)
outcomes=$(cat "$work"/load/*.json | jq -s 'length')
succeeded=$(cat "$work"/load/*.json | jq -s '[.[] | select(.status == "succeeded")] | length')
rate=$(awk -v n="$succeeded" -v s="$elapsed" 'BEGIN { printf "%.2f", n / s }')
per_node=$(cat "$work"/load/*.json | jq -rs '[.[] | .sandbox.node.hostname // "none"] | group_by(.) | map("\(.[0]): \(length)") | join(", ")')
# Leftovers once every packbox process ended: Swarm objects on the manager at once; task
# containers on every node once the Swarm removed them (waited for, bounded).
left_objects=$(for kind in service secret network; do docker "$kind" ls -q --filter label=packbox.managed=true; done | wc -l)
left_containers=0
for _ in $(seq 1 60); do
  left_containers=0
  for node in $PACKBOX_CLUSTER_MANAGER $PACKBOX_CLUSTER_WORKERS; do
    n=$( (eval "$(scripts/dind env "$node")" && docker ps -aq --filter label=packbox.kind=run) | wc -l)
    left_containers=$((left_containers + n))
  done
  [ "$left_containers" = 0 ] && break
  sleep 1
done

engine=$(docker version --format '{{.Server.Version}} (API {{.Server.APIVersion}})')
{
  echo "# swarm backend on three nodes"
  echo
  echo "$(date -u +%Y-%m-%d), $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), a Swarm of three Docker-in-Docker engines (Docker $engine) on one machine: a manager and two workers on a Docker network of their own, the registry $registry on it. Reproduce: \`scripts/bench-swarm cluster\`."
  echo "Bringing the cluster up took ${up_s} s. Medians of hyperfine runs of \`bench.noop\`, placed by \`--placement\`. Each part begins once the 1-minute load is below 2 (waited for, bounded). Load average (1, 5, 15 min) at the start of part 1: $load_before, at its end: $load_after_1; at the start of part 2: $load_before_2, at its end: $load_after_2."
  echo
  echo "| one run, trivial action | median | against the manager |"
  echo "|---|---|---|"
  echo "| packbox, swarm backend, on the manager | $(ms "$manager_s") | |"
  echo "| packbox, swarm backend, on a worker | $(ms "$worker_s") | $(diff_ms "$worker_s" "$manager_s") |"
  echo
  echo "| $load runs at concurrency $concurrency on the workers | value |"
  echo "|---|---|"
  echo "| wall time | ${elapsed} s |"
  echo "| outcomes / succeeded | $outcomes / $succeeded |"
  echo "| runs/s | $rate |"
  echo "| runs per node | $per_node |"
  echo "| services, secrets, networks left | $left_objects |"
  echo "| task containers left on the nodes (waited up to 60 s) | $left_containers |"
} >"$out"
cat "$out"
