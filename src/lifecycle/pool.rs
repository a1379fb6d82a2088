//! A warm pool for long-lived executors: containers created, attached and started ahead of time,
//! their process blocked on a go-line on stdin, so that a run pays for the handoff and the
//! action, not for the engine's container start (~125 ms here).
//!
//! Isolation is unchanged: every pooled container runs exactly one action and is removed after
//! it, with the same spec a cold run would have. Only the moment of `start` moves earlier; the
//! timeout counts from the handoff. A pooled container's exec id is fixed when it is made.

use std::collections::HashMap;
use std::sync::Mutex;

use super::run::Started;
use crate::engine::ContainerSpec;

/// The line that releases a pooled container's process into the action.
pub const GO_LINE: &[u8] = b"go\n";

/// Makes a command wait for the go-line on stdin before it becomes the action; everything after
/// that line is the action's stdin. `read` takes the line byte by byte, so nothing more is
/// consumed.
pub fn wait_for_go(cmd: Vec<String>) -> Vec<String> {
    let mut wrapped = vec![
        "/bin/sh".to_string(),
        "-c".to_string(),
        r#"read -r _ && exec "$@""#.to_string(),
        "packbox-warm".to_string(),
    ];
    wrapped.extend(cmd);
    wrapped
}

/// What makes two runs interchangeable: the whole spec but the run's own exec id.
pub fn key(spec: &ContainerSpec) -> String {
    let mut general = spec.clone();
    general.env.retain(|(name, _)| name != "ATTUNE_EXEC_ID");
    general.labels.remove("packbox.exec_id");
    format!("{general:?}")
}

/// A pre-started container and the exec id it was made for.
#[derive(Debug)]
pub struct Warm {
    pub exec_id: String,
    pub started: Started,
}

/// Idle pre-started containers, at most `per_key` for each kind of run.
#[derive(Debug)]
pub struct WarmPool {
    per_key: usize,
    idle: Mutex<HashMap<String, Vec<Warm>>>,
}

impl WarmPool {
    /// A pool keeping up to `per_key` idle containers per kind of run.
    pub fn new(per_key: usize) -> WarmPool {
        WarmPool {
            per_key,
            idle: Mutex::new(HashMap::new()),
        }
    }

    /// An idle container for this kind of run, if there is one.
    pub fn take(&self, key: &str) -> Option<Warm> {
        self.idle.lock().ok()?.get_mut(key)?.pop()
    }

    /// Keeps a container for later; gives it back (to be discarded) when the pool is full.
    #[must_use]
    pub fn put(&self, key: String, warm: Warm) -> Option<Warm> {
        let Ok(mut idle) = self.idle.lock() else {
            return Some(warm);
        };
        let slot = idle.entry(key).or_default();
        if slot.len() >= self.per_key {
            return Some(warm);
        }
        slot.push(warm);
        None
    }

    /// How many containers wait in the pool.
    pub fn idle(&self) -> usize {
        self.idle
            .lock()
            .map(|idle| idle.values().map(Vec::len).sum())
            .unwrap_or(0)
    }

    /// Every idle container, emptying the pool.
    pub fn drain(&self) -> Vec<Warm> {
        self.idle
            .lock()
            .map(|mut idle| idle.drain().flat_map(|(_, warm)| warm).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_that_differ_only_by_exec_id_share_a_key() {
        let mut a = ContainerSpec {
            image: "img".into(),
            cmd: vec!["bash".into()],
            env: vec![
                ("ATTUNE_EXEC_ID".into(), "1".into()),
                ("X".into(), "y".into()),
            ],
            ..Default::default()
        };
        a.labels.insert("packbox.exec_id".into(), "1".into());
        let mut b = a.clone();
        b.env[0].1 = "2".into();
        b.labels.insert("packbox.exec_id".into(), "2".into());
        assert_eq!(key(&a), key(&b));
        let mut c = a.clone();
        c.memory_bytes = 1;
        assert_ne!(
            key(&a),
            key(&c),
            "a different sandbox is a different kind of run"
        );
    }

    #[test]
    fn the_wrapper_ends_in_the_action() {
        let cmd = wait_for_go(vec!["node".into(), "/pack/actions/a.js".into()]);
        assert_eq!(cmd[..3], ["/bin/sh", "-c", r#"read -r _ && exec "$@""#]);
        assert_eq!(cmd[4..], ["node", "/pack/actions/a.js"]);
    }
}
