//! What `/metrics` shows, in the Prometheus text format (OpenMetrics), every series named
//! `packbox_*`: executions by action and status, their durations, queue depth, runs in flight,
//! idle pooled containers per kind, environment builds, engine errors, exit status mismatches,
//! HTTP requests, the size of the execution records.
//!
//! Counters and the histogram are updated as things happen; the gauges are read from the
//! dispatcher when scraped, so they are never stale.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::records::StoreSize;

/// The content type of the exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionStatus {
    action: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Action {
    action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    action: String,
    image: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Request {
    route: String,
    code: String,
}

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    executions: Family<ActionStatus, Counter>,
    durations: Family<Action, Histogram>,
    queue_depth: Gauge,
    in_flight: Gauge,
    warm_idle: Family<Kind, Gauge>,
    env_builds: Counter,
    engine_errors: Counter,
    exit_mismatches: Counter,
    requests: Family<Request, Counter>,
    egress_refused: Family<Action, Counter>,
    records_bytes: Gauge,
    records_disk_bytes: Gauge,
    held_requests: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every series, registered.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let executions = Family::<ActionStatus, Counter>::default();
        registry.register(
            "packbox_executions",
            "Executions that ended, by action and final status",
            executions.clone(),
        );
        let durations = Family::<Action, Histogram>::new_with_constructor(|| {
            // 10 ms to about 10 minutes.
            Histogram::new(exponential_buckets(0.01, 2.0, 17))
        });
        registry.register(
            "packbox_execution_duration_seconds",
            "Time from taking a run slot to the end of the run (image preparation included)",
            durations.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "packbox_queue_depth",
            "Executions accepted and waiting for a run slot",
            queue_depth.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "packbox_executions_in_flight",
            "Executions holding a run slot",
            in_flight.clone(),
        );
        let warm_idle = Family::<Kind, Gauge>::default();
        registry.register(
            "packbox_warm_idle_containers",
            "Pre-started containers waiting in the warm pool, per kind of run",
            warm_idle.clone(),
        );
        let env_builds = Counter::default();
        registry.register(
            "packbox_env_builds",
            "Environment images built for runs",
            env_builds.clone(),
        );
        let engine_errors = Counter::default();
        registry.register(
            "packbox_engine_errors",
            "Runs that failed because of packbox or the engine, and failed engine checks",
            engine_errors.clone(),
        );
        let exit_mismatches = Counter::default();
        registry.register(
            "packbox_exit_status_mismatches",
            "Runs whose result came from packbox's init at the action's exit and whose container's exit status, as the engine saw it afterwards, differed or never came",
            exit_mismatches.clone(),
        );
        let requests = Family::<Request, Counter>::default();
        registry.register(
            "packbox_http_requests",
            "HTTP requests answered, by route and status code",
            requests.clone(),
        );
        let egress_refused = Family::<Action, Counter>::default();
        registry.register(
            "packbox_egress_refused",
            "Connection attempts the egress proxy refused, by action",
            egress_refused.clone(),
        );
        let records_bytes = Gauge::default();
        registry.register(
            "packbox_records_bytes",
            "Bytes of output, results and errors the execution records hold (bounded by serve.records.max_bytes)",
            records_bytes.clone(),
        );
        let records_disk_bytes = Gauge::default();
        registry.register(
            "packbox_records_disk_bytes",
            "Bytes of the execution records' database and its write-ahead log on disk",
            records_disk_bytes.clone(),
        );
        let held_requests = Gauge::default();
        registry.register(
            "packbox_held_requests",
            "Requests holding their connection: waits for an execution's end and output followers (bounded by serve.max_waiting)",
            held_requests.clone(),
        );
        Metrics {
            egress_refused,
            held_requests,
            records_bytes,
            records_disk_bytes,
            registry,
            executions,
            durations,
            queue_depth,
            in_flight,
            warm_idle,
            env_builds,
            engine_errors,
            exit_mismatches,
            requests,
        }
    }

    /// An execution ended.
    pub fn execution_ended(&self, action: &str, status: &str) {
        self.executions
            .get_or_create(&ActionStatus {
                action: action.to_string(),
                status: status.to_string(),
            })
            .inc();
    }

    /// The egress proxy refused `count` connection attempts of a run of `action`.
    pub fn egress_refused(&self, action: &str, count: u64) {
        if count > 0 {
            self.egress_refused
                .get_or_create(&Action {
                    action: action.to_string(),
                })
                .inc_by(count);
        }
    }

    /// A run that held a slot took `seconds`.
    pub fn run_took(&self, action: &str, seconds: f64) {
        self.durations
            .get_or_create(&Action {
                action: action.to_string(),
            })
            .observe(seconds);
    }

    /// A run started an environment build.
    pub fn env_build(&self) {
        self.env_builds.inc();
    }

    /// packbox or the engine failed.
    pub fn engine_error(&self) {
        self.engine_errors.inc();
    }

    /// An HTTP request was answered.
    pub fn request(&self, route: &str, code: u16) {
        self.requests
            .get_or_create(&Request {
                route: route.to_string(),
                code: code.to_string(),
            })
            .inc();
    }

    /// The exposition, with the gauges set to what they are now and the executor's count of
    /// exit status mismatches (a total it keeps) brought up to date.
    pub fn render(
        &self,
        queued: usize,
        running: usize,
        warm: impl IntoIterator<Item = (String, String, usize)>,
        records: StoreSize,
        held: usize,
        exit_mismatches: u64,
    ) -> String {
        let counted = self.exit_mismatches.get();
        if exit_mismatches > counted {
            self.exit_mismatches.inc_by(exit_mismatches - counted);
        }
        self.held_requests.set(held as i64);
        self.records_bytes
            .set(records.content.min(i64::MAX as u64) as i64);
        self.records_disk_bytes
            .set(records.on_disk.min(i64::MAX as u64) as i64);
        self.queue_depth.set(queued as i64);
        self.in_flight.set(running as i64);
        self.warm_idle.clear();
        for (action, image, idle) in warm {
            self.warm_idle
                .get_or_create(&Kind { action, image })
                .set(idle as i64);
        }
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            tracing::warn!("encoding the metrics failed");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_names_every_series_packbox_and_counts() {
        let metrics = Metrics::new();
        metrics.execution_ended("p.a", "succeeded");
        metrics.execution_ended("p.a", "succeeded");
        metrics.run_took("p.a", 0.05);
        metrics.env_build();
        metrics.request("/v1/executions", 201);
        let size = StoreSize {
            content: 1234,
            on_disk: 8192,
        };
        let text = metrics.render(3, 2, [("p.a".into(), "img:1".into(), 1)], size, 5, 2);
        assert!(text.contains("packbox_held_requests 5"), "{text}");
        assert!(text.contains("packbox_records_bytes 1234"), "{text}");
        assert!(text.contains("packbox_records_disk_bytes 8192"), "{text}");
        assert!(
            text.contains(r#"packbox_executions_total{action="p.a",status="succeeded"} 2"#),
            "{text}"
        );
        assert!(text.contains("packbox_queue_depth 3"), "{text}");
        assert!(text.contains("packbox_executions_in_flight 2"), "{text}");
        assert!(
            text.contains(r#"packbox_warm_idle_containers{action="p.a",image="img:1"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("packbox_execution_duration_seconds_count{action=\"p.a\"} 1"),
            "{text}"
        );
        assert!(text.contains("packbox_env_builds_total 1"), "{text}");
        assert!(text.contains("packbox_engine_errors_total 0"), "{text}");
        assert!(
            text.contains("packbox_exit_status_mismatches_total 2"),
            "{text}"
        );
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            assert!(line.starts_with("packbox_"), "{line}");
        }
        // A kind that left the pool leaves the exposition.
        let text = metrics.render(0, 0, [], StoreSize::default(), 0, 2);
        assert!(!text.contains("img:1"), "{text}");
    }
}
