# shellcheck shell=bash
# `settle`: waits (bounded: PACKBOX_BENCH_SETTLE seconds, default 300) until the machine is quiet
# (1-minute load average below 2) so that what one section's runs left on the machine never weighs
# on the next one's, as benches/speed does; prints the load average the section began at, marked
# "(not quiet: take it again)" when the wait ran out. Sourced by the bench scripts.
settle() {
  local bound=${PACKBOX_BENCH_SETTLE:-300} waited=0
  while awk '{ exit !($1 >= 2) }' /proc/loadavg && [ "$waited" -lt "$bound" ]; do
    sleep 5
    waited=$((waited + 5))
  done
  local at_start
  at_start=$(cut -d' ' -f1-3 /proc/loadavg)
  if awk '{ exit !($1 >= 2) }' /proc/loadavg; then
    echo "$at_start (not quiet: take it again)"
  else
    echo "$at_start"
  fi
}
