//! Whether the machine is quiet enough for a figure: a figure taken while something else runs is
//! not a figure, so each bench section waits for quiet and prints the load beside its rows.

use std::time::{Duration, Instant};

/// The 1-minute load average below which the machine counts as quiet.
const QUIET_LOAD: f64 = 2.0;

/// The load average (1, 5, 15 minutes), printed beside every figure.
pub fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn one_minute() -> f64 {
    load()
        .split_whitespace()
        .next()
        .and_then(|l| l.parse::<f64>().ok())
        .unwrap_or(f64::MAX)
}

/// Waits (bounded: `PACKBOX_BENCH_SETTLE` seconds, default 300) until the machine is quiet
/// (the 1-minute load below [`QUIET_LOAD`]) before a section's runs begin, so that what one
/// section's runs left on the machine never weighs on the next one's; returns the load the
/// section began at (above the bound when the wait ran out: such rows say so and must be
/// taken again).
pub fn settle() -> String {
    let bound = std::env::var("PACKBOX_BENCH_SETTLE")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(300));
    let began = Instant::now();
    while one_minute() >= QUIET_LOAD && began.elapsed() < bound {
        std::thread::sleep(Duration::from_secs(5));
    }
    let at_start = load();
    if one_minute() >= QUIET_LOAD {
        format!("{at_start} (not quiet: take it again)")
    } else {
        at_start
    }
}
