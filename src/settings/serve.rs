//! The `serve:` and `client:` sections resolved: what `packbox serve` runs with, and where
//! `packbox run` sends runs when it is a client of a server.

use std::net::SocketAddr;
use std::time::Duration;

use super::bounds::{self, any, count_in_range, in_range};
use super::resolve::Resolver;
use super::show::without_credentials;
use super::sources::Environment;
use super::*;

impl Resolver<'_> {
    /// The `serve.records:` section: the store's bound in bytes, what a record keeps, the free
    /// disk below which runs are refused.
    fn records(&mut self) -> Result<RecordBounds, SettingsError> {
        use serve_defaults as d;
        let max_bytes = self.setting(
            "serve.records.max_bytes",
            |l| l.serve.records.max_bytes.map(|s| s.0),
            d::RECORDS_MAX_BYTES,
            |v| in_range(*v, 1 << 20, 1 << 50, "1m", "1p"),
        )?;
        let max_output = self.setting(
            "serve.records.max_output",
            |l| l.serve.records.max_output.map(|s| s.0),
            d::RECORDS_MAX_OUTPUT,
            |v| in_range(*v, 1 << 10, 1 << 30, "1k", "1g"),
        )?;
        let min_free_disk = self.setting(
            "serve.records.min_free_disk",
            |l| l.serve.records.min_free_disk.map(|s| s.0),
            d::RECORDS_MIN_FREE_DISK,
            |v| in_range(*v, 0, 1 << 50, "0", "1p"),
        )?;
        Ok(RecordBounds {
            max_bytes: max_bytes.value,
            max_output: max_output.value,
            min_free_disk: min_free_disk.value,
        })
    }

    /// Bounds on held requests (waits, output followers), checked against the connections.
    fn held(&mut self, max_connections: u64) -> Result<HeldLimits, SettingsError> {
        use serve_defaults as d;
        let count = |min: u64, max: u64| move |v: &u64| count_in_range(*v, min, max);
        let reserved = self.setting(
            "serve.reserved_connections",
            |l| l.serve.reserved_connections,
            d::RESERVED_CONNECTIONS.min(max_connections / 2),
            count(0, max_connections.saturating_sub(1)),
        )?;
        let max_waiting = self.setting(
            "serve.max_waiting",
            |l| l.serve.max_waiting,
            d::MAX_WAITING.min(max_connections - reserved.value),
            count(1, (max_connections - reserved.value).max(1)),
        )?;
        let per_execution = self.setting(
            "serve.max_followers_per_execution",
            |l| l.serve.max_followers_per_execution,
            d::MAX_FOLLOWERS_PER_EXECUTION,
            count(1, 100_000),
        )?;
        let per_token = self.setting(
            "serve.max_held_per_token",
            |l| l.serve.max_held_per_token,
            d::MAX_HELD_PER_TOKEN,
            count(1, 1_000_000),
        )?;
        Ok(HeldLimits {
            max_waiting: max_waiting.value as usize,
            per_execution: per_execution.value as usize,
            per_token: per_token.value as usize,
            reserved_connections: reserved.value as usize,
        })
    }

    /// The `client:` settings: the server's URL (checked), the token from the environment.
    pub(super) fn client(&mut self, env: &Environment) -> Result<ClientSettings, SettingsError> {
        let server = self.pick(|l| l.client.server.clone());
        if let Some(server) = &server {
            let url = &server.value;
            let valid = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"))
                .is_some_and(|rest| !rest.is_empty() && !rest.contains(char::is_whitespace));
            if !valid {
                return Err(SettingsError::Value {
                    setting: "client.server".into(),
                    source_name: self.source_name(server.source),
                    message: format!(
                        "`{url}` is not a server URL: expected http://HOST:PORT, or https://HOST:PORT for a server behind a TLS proxy"
                    ),
                });
            }
        }
        self.show(
            "client.server",
            server.as_ref().map(|p| without_credentials(&p.value)),
            server.as_ref().map_or(Source::Default, |p| p.source),
        );
        let ca_file = self.pick(|l| l.client.ca_file.clone());
        self.show(
            "client.ca_file",
            ca_file.as_ref().map(|p| &p.value),
            ca_file.as_ref().map_or(Source::Default, |p| p.source),
        );
        let token = env.get("PACKBOX_TOKEN").map(|t| HiddenText(t.to_string()));
        self.show(
            "client.token (PACKBOX_TOKEN)",
            token.as_ref().map(|_| "(set, not shown)"),
            if token.is_some() {
                Source::Env
            } else {
                Source::Default
            },
        );
        Ok(ClientSettings {
            server: server.map(|p| p.value.trim_end_matches('/').to_string()),
            ca_file: ca_file.map(|p| p.value),
            token,
        })
    }

    /// The `serve:` settings: each one picked, checked and shown.
    pub(super) fn serve(&mut self, env: &Environment) -> Result<ServeSettings, SettingsError> {
        use serve_defaults as d;
        let listen = self.setting(
            "serve.listen",
            |l| l.serve.listen.clone(),
            d::LISTEN.to_string(),
            |text| {
                text.parse::<SocketAddr>().map(|_| ()).map_err(|_| {
                    format!("`{text}` is not an address: expected IP:PORT such as 127.0.0.1:8080")
                })
            },
        )?;
        let packs = self.pick(|l| l.serve.packs.clone());
        self.show(
            "serve.packs",
            packs.as_ref().map(|p| &p.value),
            packs.as_ref().map_or(Source::Default, |p| p.source),
        );
        let token_file = self.pick(|l| l.serve.token_file.clone());
        self.show(
            "serve.token_file",
            token_file.as_ref().map(|p| &p.value),
            token_file.as_ref().map_or(Source::Default, |p| p.source),
        );
        let env_token = env
            .get("PACKBOX_SERVE_TOKEN")
            .map(|t| HiddenText(t.to_string()));
        self.show(
            "serve.token (PACKBOX_SERVE_TOKEN)",
            env_token.as_ref().map(|_| "(set, not shown)"),
            if env_token.is_some() {
                Source::Env
            } else {
                Source::Default
            },
        );
        let count = |min: u64, max: u64| move |v: &u64| count_in_range(*v, min, max);
        let max_concurrent = self.setting(
            "serve.max_concurrent",
            |l| l.serve.max_concurrent,
            d::MAX_CONCURRENT,
            count(1, 4096),
        )?;
        let max_queue = self.setting(
            "serve.max_queue",
            |l| l.serve.max_queue,
            d::MAX_QUEUE,
            count(0, 1_000_000),
        )?;
        let max_wait = self.setting(
            "serve.max_wait_seconds",
            |l| l.serve.max_wait_seconds,
            d::MAX_WAIT,
            count(1, 3600),
        )?;
        let max_timeout = self.setting(
            "serve.max_timeout_seconds",
            |l| l.serve.max_timeout_seconds,
            d::MAX_TIMEOUT,
            count(1, bounds::MAX_TIMEOUT),
        )?;
        let max_body = self.setting(
            "serve.max_body",
            |l| l.serve.max_body.map(|s| s.0),
            d::MAX_BODY,
            |v| in_range(*v, 1 << 10, 1 << 30, "1k", "1g"),
        )?;
        let client_timeout = self.setting(
            "serve.client_timeout_seconds",
            |l| l.serve.client_timeout_seconds,
            d::CLIENT_TIMEOUT,
            count(1, 3600),
        )?;
        let max_connections = self.setting(
            "serve.max_connections",
            |l| l.serve.max_connections,
            d::MAX_CONNECTIONS,
            count(1, 1_000_000),
        )?;
        let drain = self.setting(
            "serve.drain_seconds",
            |l| l.serve.drain_seconds,
            d::DRAIN,
            count(0, 24 * 3600),
        )?;
        let warm_per_kind = self.setting(
            "serve.warm.per_kind",
            |l| l.serve.warm.per_kind,
            d::WARM_PER_KIND,
            count(0, 64),
        )?;
        let warm_total = self.setting(
            "serve.warm.total",
            |l| l.serve.warm.total,
            d::WARM_TOTAL,
            count(0, 1024),
        )?;
        let age = |key: &'static str,
                   this: &mut Self,
                   get: fn(&SettingsLayer) -> Option<Age>,
                   default: Duration| {
            this.setting(
                key,
                |l| get(l).map(|a| a.0.as_secs()),
                default.as_secs(),
                |v| count_in_range(*v, 1, 100 * 365 * 24 * 3600),
            )
            .map(|p| Duration::from_secs(p.value))
        };
        let warm_idle = age("serve.warm.idle", self, |l| l.serve.warm.idle, d::WARM_IDLE)?;
        let warm_preload = self.setting(
            "serve.warm.preload",
            |l| l.serve.warm.preload,
            d::WARM_PRELOAD,
            any,
        )?;
        let succeeded_age = age(
            "serve.retention.succeeded.max_age",
            self,
            |l| l.serve.retention.succeeded.max_age,
            d::SUCCEEDED_AGE,
        )?;
        let failed_age = age(
            "serve.retention.failed.max_age",
            self,
            |l| l.serve.retention.failed.max_age,
            d::FAILED_AGE,
        )?;
        let prune_every = age(
            "serve.retention.prune_every",
            self,
            |l| l.serve.retention.prune_every,
            d::PRUNE_EVERY,
        )?;
        let succeeded_count = self.setting(
            "serve.retention.succeeded.max_count",
            |l| l.serve.retention.succeeded.max_count,
            d::SUCCEEDED_COUNT,
            count(1, u64::MAX >> 1),
        )?;
        let failed_count = self.setting(
            "serve.retention.failed.max_count",
            |l| l.serve.retention.failed.max_count,
            d::FAILED_COUNT,
            count(1, u64::MAX >> 1),
        )?;
        let records = self.records()?;
        let held = self.held(max_connections.value)?;
        Ok(ServeSettings {
            records,
            held,
            // Checked above.
            listen: listen
                .value
                .parse()
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080))),
            packs: packs.map(|p| p.value),
            token_file: token_file.map(|p| p.value),
            env_token,
            max_concurrent: max_concurrent.value as usize,
            max_queue: max_queue.value as usize,
            max_wait: Duration::from_secs(max_wait.value),
            max_timeout: Duration::from_secs(max_timeout.value),
            max_body: max_body.value as usize,
            client_timeout: Duration::from_secs(client_timeout.value),
            max_connections: max_connections.value as usize,
            drain: Duration::from_secs(drain.value),
            warm: WarmSettings {
                per_kind: warm_per_kind.value as usize,
                total: warm_total.value as usize,
                idle: warm_idle,
                preload: warm_preload.value,
            },
            retention: Retention {
                succeeded: Keep {
                    max_age: succeeded_age,
                    max_count: succeeded_count.value,
                },
                failed: Keep {
                    max_age: failed_age,
                    max_count: failed_count.value,
                },
                prune_every,
            },
        })
    }
}
