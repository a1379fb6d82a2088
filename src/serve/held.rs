//! Requests that hold their connection for a long time: waits for an execution's end (`wait`)
//! and followers of its output (Server-Sent Events). Each takes a place here for as long as it
//! is held, bounded in all, per token and (followers) per execution, so that held requests never
//! take every connection: health checks, admin routes and short requests keep theirs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use packbox::HeldLimits;

/// Why a request may not hold its connection now.
#[derive(Debug, PartialEq, Eq)]
pub enum HeldRefused {
    /// Every place for held requests is taken.
    Full,
    /// The token holds as many as it may.
    Token,
    /// The execution has as many followers as it may.
    Execution,
}

impl HeldRefused {
    /// The sentence for the refusal.
    pub fn message(&self, limits: &HeldLimits) -> String {
        match self {
            HeldRefused::Full => format!(
                "the server holds {} waiting requests and followers already (serve.max_waiting); try again later",
                limits.max_waiting
            ),
            HeldRefused::Token => format!(
                "this token holds {} waiting requests and followers already (serve.max_held_per_token); close some first",
                limits.per_token
            ),
            HeldRefused::Execution => format!(
                "this execution has {} followers already (serve.max_followers_per_execution)",
                limits.per_execution
            ),
        }
    }
}

#[derive(Default)]
struct Counts {
    total: usize,
    tokens: HashMap<String, usize>,
    executions: HashMap<String, usize>,
}

/// The places for held requests.
pub struct Held {
    limits: HeldLimits,
    counts: Arc<Mutex<Counts>>,
}

/// One held request's place, given back when dropped.
pub struct Place {
    counts: Arc<Mutex<Counts>>,
    token: String,
    execution: Option<String>,
}

impl Held {
    /// No request held yet.
    pub fn new(limits: HeldLimits) -> Held {
        Held {
            limits,
            counts: Arc::default(),
        }
    }

    /// Requests held now.
    pub fn total(&self) -> usize {
        self.counts.lock().map(|c| c.total).unwrap_or(0)
    }

    /// The bounds in force.
    pub fn limits(&self) -> &HeldLimits {
        &self.limits
    }

    /// A place for a request of `token` (`-` without tokens), following `execution` when it is
    /// a follower.
    pub fn take(&self, token: &str, following: Option<&str>) -> Result<Place, HeldRefused> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if counts.total >= self.limits.max_waiting {
            return Err(HeldRefused::Full);
        }
        if counts.tokens.get(token).copied().unwrap_or(0) >= self.limits.per_token {
            return Err(HeldRefused::Token);
        }
        if let Some(execution) = following
            && counts.executions.get(execution).copied().unwrap_or(0) >= self.limits.per_execution
        {
            return Err(HeldRefused::Execution);
        }
        counts.total += 1;
        *counts.tokens.entry(token.to_string()).or_default() += 1;
        if let Some(execution) = following {
            *counts.executions.entry(execution.to_string()).or_default() += 1;
        }
        Ok(Place {
            counts: Arc::clone(&self.counts),
            token: token.to_string(),
            execution: following.map(str::to_string),
        })
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.total = counts.total.saturating_sub(1);
        let release = |map: &mut HashMap<String, usize>, key: &str| {
            if let Some(count) = map.get_mut(key) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    map.remove(key);
                }
            }
        };
        release(&mut counts.tokens, &self.token);
        if let Some(execution) = &self.execution {
            release(&mut counts.executions, execution);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(max_waiting: usize, per_execution: usize, per_token: usize) -> Held {
        let mut limits = HeldLimits::default();
        limits.max_waiting = max_waiting;
        limits.per_execution = per_execution;
        limits.per_token = per_token;
        Held::new(limits)
    }

    #[test]
    fn places_are_bounded_in_all_per_token_and_per_execution_and_given_back() {
        let held = held(4, 2, 3);
        let a1 = held.take("a", Some("e1")).expect("first");
        let _a2 = held.take("a", Some("e1")).expect("second");
        assert_eq!(
            held.take("b", Some("e1")).err(),
            Some(HeldRefused::Execution)
        );
        let _a3 = held.take("a", None).expect("a wait");
        assert_eq!(held.take("a", Some("e2")).err(), Some(HeldRefused::Token));
        let _b1 = held.take("b", Some("e2")).expect("b");
        assert_eq!(held.take("c", None).err(), Some(HeldRefused::Full));
        drop(a1);
        let _c = held.take("c", Some("e1")).expect("a place was given back");
        assert_eq!(held.counts.lock().expect("lock").total, 4);
    }
}
