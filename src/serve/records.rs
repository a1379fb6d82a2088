//! Durable execution records: one SQLite database in the state folder (WAL), written before a
//! run starts and when it ends, so that a crash never loses an accepted run: at the next start
//! the runs that were queued or running are marked `abandoned`.
//!
//! Records hold what the API shows: the scrubbed outcome, never a secret or a parameter value
//! (parameters may be secret; the record names the action, pack version and content instead),
//! and the names of the secrets a run received with where each came from. They are bounded in
//! bytes: each output stream is kept up to a cap (head and tail, `clip.rs`), and pruning removes
//! the oldest final records when all of them hold more than the store's bound.
//! SQLite calls block, so each runs on tokio's blocking pool, one at a time on one connection:
//! a handful of small transactions per run is far below what one connection does.

use std::collections::HashSet;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use packbox::clock::{now_ms, rfc3339};
use packbox::{Artifact, KeyUse, Outcome, RefusedArtifact, Retention, Status};
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The schema this code writes; bumped with each change (with a migration).
const SCHEMA_VERSION: i64 = 5;

/// What turns the schema of one version into the next: `(version, statements)`, applied in
/// order to a database older than `version` (a new one gets `SCHEMA`, then all of them).
const MIGRATIONS: &[(i64, &str)] = &[
    // Version 2: the names of the secrets a run received, and the bytes a record holds.
    (
        2,
        "ALTER TABLE executions ADD COLUMN keys TEXT;
         ALTER TABLE executions ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0;",
    ),
    // Version 3: what runs with an egress grant reached.
    (3, "ALTER TABLE executions ADD COLUMN egress TEXT;"),
    // Version 4: Attune's integer execution id of the run, and what its outcome warned about.
    (
        4,
        "ALTER TABLE executions ADD COLUMN attune_exec_id INTEGER;
         ALTER TABLE executions ADD COLUMN warnings TEXT;",
    ),
    // Version 5: the artifacts a run kept and refused.
    (5, "ALTER TABLE executions ADD COLUMN artifacts TEXT;"),
];

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS executions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    action TEXT NOT NULL,
    status TEXT NOT NULL,
    token_name TEXT NOT NULL DEFAULT '',
    idempotency_key TEXT,
    exec_id TEXT,
    pack_version TEXT,
    pack_digest TEXT,
    timeout_seconds INTEGER NOT NULL,
    exit_code INTEGER,
    result TEXT,
    stdout TEXT NOT NULL DEFAULT '',
    stderr TEXT NOT NULL DEFAULT '',
    stdout_truncated INTEGER NOT NULL DEFAULT 0,
    stderr_truncated INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    sandbox TEXT,
    image TEXT,
    runtime TEXT,
    runtime_version TEXT,
    duration_ms INTEGER,
    prepare_ms INTEGER,
    queued_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER,
    result_truncated INTEGER NOT NULL DEFAULT 0,
    result_error TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS executions_idempotency
    ON executions (token_name, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS executions_status ON executions (status, seq);
CREATE INDEX IF NOT EXISTS executions_action ON executions (action, seq);
";

/// The columns of a full record, in the order [`record_from_row`] reads them.
const COLUMNS: &str = "seq, id, action, status, token_name, idempotency_key, exec_id, pack_version,
    pack_digest, timeout_seconds, exit_code, result, stdout, stderr, stdout_truncated,
    stderr_truncated, error, sandbox, image, runtime, runtime_version, duration_ms, prepare_ms,
    queued_at, started_at, finished_at, result_truncated, result_error, keys, egress,
    attune_exec_id, warnings, artifacts";

/// The record store could not do its work.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite could not open the database (or set it up).
    #[error("execution records {}: cannot open", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// The database file or its folder could not be created with the owner-only mode.
    #[error("execution records {}: cannot prepare the file", path.display())]
    File {
        /// The database file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The database was written by a newer packbox: this one would misread it, so it stops.
    #[error(
        "execution records {}: schema version {found} is newer than this packbox ({SCHEMA_VERSION})",
        path.display()
    )]
    NewerSchema {
        /// The database file.
        path: PathBuf,
        /// The schema version the file has.
        found: i64,
    },
    /// A statement failed.
    #[error("execution records: {what}")]
    Query {
        /// What it was doing (`listing executions`).
        what: &'static str,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// The blocking task that runs the SQLite call panicked or was dropped.
    #[error("execution records: the database worker stopped")]
    Worker,
}

/// Where an execution is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecStatus {
    /// Accepted, waiting for a free slot.
    Queued,
    /// Preparing its image or running its action.
    Running,
    /// The action exited 0.
    Succeeded,
    /// The action exited non-zero.
    Failed,
    /// The action ran past its timeout and was stopped.
    Timeout,
    /// The kernel's OOM killer ended the action.
    Oom,
    /// A client cancelled it, or the server's drain time ran out.
    Cancelled,
    /// packbox or the engine could not run it.
    Error,
    /// Its input turned out wrong once it ran (an OCI runtime or a version the engine lacks).
    Invalid,
    /// The server stopped (crash, kill) before the run ended.
    Abandoned,
}

impl ExecStatus {
    /// Every status, for metrics and documentation.
    pub const ALL: [ExecStatus; 10] = [
        ExecStatus::Queued,
        ExecStatus::Running,
        ExecStatus::Succeeded,
        ExecStatus::Failed,
        ExecStatus::Timeout,
        ExecStatus::Oom,
        ExecStatus::Cancelled,
        ExecStatus::Error,
        ExecStatus::Invalid,
        ExecStatus::Abandoned,
    ];

    /// The status's name, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecStatus::Queued => "queued",
            ExecStatus::Running => "running",
            ExecStatus::Succeeded => "succeeded",
            ExecStatus::Failed => "failed",
            ExecStatus::Timeout => "timeout",
            ExecStatus::Oom => "oom",
            ExecStatus::Cancelled => "cancelled",
            ExecStatus::Error => "error",
            ExecStatus::Invalid => "invalid",
            ExecStatus::Abandoned => "abandoned",
        }
    }

    /// The status a name stands for.
    pub fn parse(name: &str) -> Option<ExecStatus> {
        ExecStatus::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Whether the execution has ended.
    pub fn is_final(self) -> bool {
        !matches!(self, ExecStatus::Queued | ExecStatus::Running)
    }

    /// The status of a run that produced an outcome.
    pub fn of_outcome(status: Status) -> ExecStatus {
        match status {
            Status::Succeeded => ExecStatus::Succeeded,
            Status::Failed => ExecStatus::Failed,
            Status::Timeout => ExecStatus::Timeout,
            Status::Oom => ExecStatus::Oom,
            Status::Cancelled => ExecStatus::Cancelled,
            _ => ExecStatus::Error,
        }
    }
}

/// One execution as the API shows it. The outcome fields carry the names of packbox's outcome,
/// so `packbox run --json` prints the same fields locally and through a server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The execution's id in the API (`/v1/executions/{id}`).
    pub id: String,
    /// The action's ref, `pack.action`.
    pub action: String,
    /// Where the execution is in its life.
    pub status: ExecStatus,
    /// The name of the token that asked for the run (never the token).
    pub token_name: Option<String>,
    /// The client's `Idempotency-Key`: the same token sending it again gets this execution.
    pub idempotency_key: Option<String>,
    /// The names of the secrets the run received (never their values), each with where it came
    /// from: a key-store scope (`system`, `pack:<ref>`, `action:<pack.action>`) or `request`.
    pub keys: Vec<KeyUse>,
    /// The run's `PACKBOX_EXEC_ID`, and its container's `packbox.exec_id` label.
    pub exec_id: Option<String>,
    /// The run's `ATTUNE_EXEC_ID`: a positive integer, unique within the state folder.
    pub attune_exec_id: Option<u64>,
    /// What the run accepted but deserves a word (parameters the action does not declare).
    pub warnings: Vec<String>,
    /// The pack's `version` when the run was accepted.
    pub pack_version: Option<String>,
    /// SHA-256 of the pack's files when the run was accepted.
    pub pack_digest: Option<String>,
    /// The run's time limit.
    pub timeout_seconds: u64,
    /// The action's exit code, when it ran and the engine reported one.
    pub exit_code: Option<i64>,
    /// stdout parsed by the action's output format, on success.
    pub result: Option<Value>,
    /// stdout was cut before it was parsed, so `result` is missing or partial.
    pub result_truncated: bool,
    /// Why stdout could not be parsed into `result` (or not all of it).
    pub result_error: Option<String>,
    /// What the action printed on stdout, secrets scrubbed (its head when cut).
    pub stdout: String,
    /// What the action printed on stderr, secrets scrubbed (its head when cut).
    pub stderr: String,
    /// stdout was longer than the output limit and was cut.
    pub stdout_truncated: bool,
    /// stderr was longer than the output limit and was cut.
    pub stderr_truncated: bool,
    /// Why the execution did not succeed; `None` on success and while it is not over.
    pub error: Option<String>,
    /// The sandbox settings that were applied, as the outcome reports them.
    pub sandbox: Option<Value>,
    /// For a run with an egress grant: the grant and every connection attempt through the
    /// proxy, as the outcome reports them (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress: Option<Value>,
    /// The files the action left in `ATTUNE_ARTIFACTS_DIR` that were kept (name, size,
    /// SHA-256), each downloadable at `/v1/executions/{id}/artifacts/{name}`.
    #[serde(default)]
    pub artifacts: Vec<Artifact>,
    /// The entries of its artifacts folder that were not kept, each with why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts_refused: Vec<RefusedArtifact>,
    /// The image the action ran in.
    pub image: Option<String>,
    /// The catalog's name for the runtime the action ran on.
    pub runtime: Option<String>,
    /// The runtime version the image holds.
    pub runtime_version: Option<String>,
    /// Wall time of the run, image preparation included (not the time queued).
    pub duration_ms: Option<u64>,
    /// The part of `duration_ms` spent making the image ready.
    pub prepare_ms: Option<u64>,
    /// RFC 3339, UTC.
    pub queued_at: String,
    /// When it left the queue (RFC 3339, UTC).
    pub started_at: Option<String>,
    /// When it ended (RFC 3339, UTC).
    pub finished_at: Option<String>,
}

/// An execution to record before it runs.
#[derive(Clone, Debug)]
pub struct NewExecution {
    /// The execution's id in the API.
    pub id: String,
    /// The action's ref.
    pub action: String,
    /// The name of the token that asked for it.
    pub token_name: Option<String>,
    /// The client's `Idempotency-Key`, unique per token.
    pub idempotency_key: Option<String>,
    /// The pack's `version` from the plan.
    pub pack_version: String,
    /// SHA-256 of the pack's files from the plan.
    pub pack_digest: String,
    /// The run's time limit.
    pub timeout_seconds: u64,
    /// The names of the secrets the run receives, and where each comes from.
    pub keys: Vec<KeyUse>,
}

/// What recording a new execution gave.
#[derive(Debug)]
pub enum Accepted {
    /// Recorded now, queued.
    New(Record),
    /// The same token already sent this idempotency key: the execution it made.
    Existing(Record),
}

/// How an execution ended.
#[derive(Debug)]
pub struct Ending {
    /// The final status.
    pub status: ExecStatus,
    /// The run's exec id, when it got as far as a container.
    pub exec_id: Option<String>,
    /// See [`Record::attune_exec_id`].
    pub attune_exec_id: Option<u64>,
    /// See [`Record::warnings`].
    pub warnings: Vec<String>,
    /// See [`Record::exit_code`].
    pub exit_code: Option<i64>,
    /// See [`Record::result`].
    pub result: Option<Value>,
    /// See [`Record::result_truncated`].
    pub result_truncated: bool,
    /// See [`Record::result_error`].
    pub result_error: Option<String>,
    /// See [`Record::stdout`].
    pub stdout: String,
    /// See [`Record::stderr`].
    pub stderr: String,
    /// See [`Record::stdout_truncated`].
    pub stdout_truncated: bool,
    /// See [`Record::stderr_truncated`].
    pub stderr_truncated: bool,
    /// See [`Record::error`].
    pub error: Option<String>,
    /// See [`Record::sandbox`].
    pub sandbox: Option<Value>,
    /// See [`Record::egress`].
    pub egress: Option<Value>,
    /// See [`Record::artifacts`].
    pub artifacts: Vec<Artifact>,
    /// See [`Record::artifacts_refused`].
    pub artifacts_refused: Vec<RefusedArtifact>,
    /// See [`Record::image`].
    pub image: Option<String>,
    /// See [`Record::runtime`].
    pub runtime: Option<String>,
    /// See [`Record::runtime_version`].
    pub runtime_version: Option<String>,
    /// See [`Record::duration_ms`].
    pub duration_ms: Option<u64>,
    /// See [`Record::prepare_ms`].
    pub prepare_ms: Option<u64>,
}

impl Ending {
    /// The ending of a run that produced an outcome (already scrubbed of its secrets).
    pub fn from_outcome(outcome: Outcome) -> Ending {
        Ending {
            status: ExecStatus::of_outcome(outcome.status),
            exec_id: Some(outcome.exec_id),
            attune_exec_id: Some(outcome.attune_exec_id),
            warnings: outcome.warnings,
            exit_code: outcome.exit_code,
            result: outcome.result,
            result_truncated: outcome.result_truncated,
            result_error: outcome.result_error,
            stdout: outcome.stdout,
            stderr: outcome.stderr,
            stdout_truncated: outcome.stdout_truncated,
            stderr_truncated: outcome.stderr_truncated,
            error: outcome.error,
            sandbox: serde_json::to_value(&outcome.sandbox).ok(),
            egress: outcome
                .egress
                .as_ref()
                .and_then(|egress| serde_json::to_value(egress).ok()),
            artifacts: outcome.artifacts,
            artifacts_refused: outcome.artifacts_refused,
            image: Some(outcome.image),
            runtime: Some(outcome.runtime),
            runtime_version: Some(outcome.runtime_version),
            duration_ms: Some(outcome.duration_ms),
            prepare_ms: Some(outcome.prepare_ms),
        }
    }

    /// This ending as a record keeps it: each stream at most `cap` bytes (head and tail), a
    /// result larger than `cap` left out, and the record says so.
    fn clipped(mut self, cap: usize) -> Ending {
        let (stdout, cut) = super::clip::clip_text(self.stdout, cap);
        self.stdout = stdout;
        self.stdout_truncated |= cut;
        let (stderr, cut) = super::clip::clip_text(self.stderr, cap);
        self.stderr = stderr;
        self.stderr_truncated |= cut;
        if let Some(error) = self.error.take() {
            self.error = Some(super::clip::clip_text(error, cap).0);
        }
        if self
            .result
            .as_ref()
            .is_some_and(|result| !super::clip::fits(result, cap))
        {
            self.result = None;
            self.result_truncated = true;
            self.result_error = Some(format!(
                "the result is larger than the {cap} bytes a record keeps (serve.records.max_output)"
            ));
        }
        self
    }

    /// The ending of a run that never produced an outcome.
    pub fn without_outcome(status: ExecStatus, error: String) -> Ending {
        Ending {
            status,
            exec_id: None,
            attune_exec_id: None,
            warnings: Vec::new(),
            exit_code: None,
            result: None,
            result_truncated: false,
            result_error: None,
            stdout: String::new(),
            stderr: String::new(),
            stdout_truncated: false,
            stderr_truncated: false,
            error: Some(error),
            sandbox: None,
            egress: None,
            artifacts: Vec::new(),
            artifacts_refused: Vec::new(),
            image: None,
            runtime: None,
            runtime_version: None,
            duration_ms: None,
            prepare_ms: None,
        }
    }
}

/// Which records a listing wants, newest first.
#[derive(Clone, Debug, Default)]
pub struct ListQuery {
    /// Only executions started by the token of this name (a token that reads only its own).
    pub token: Option<String>,
    /// Only this action's executions.
    pub action: Option<String>,
    /// Only executions in this status.
    pub status: Option<ExecStatus>,
    /// Records per page; at least 1.
    pub limit: usize,
    /// Only records older than this position (from a previous page's cursor).
    pub before: Option<i64>,
}

/// One page of a listing: records without their output, and where the next page starts.
#[derive(Debug, Serialize)]
pub struct Page {
    /// The records, newest first, without `stdout`, `stderr`, `result`, `sandbox` and `egress`.
    pub executions: Vec<Value>,
    /// The `before` of the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// An execution marked abandoned at start-up.
#[derive(Debug, Clone)]
pub struct Abandoned {
    /// The execution's id in the API.
    pub id: String,
    /// Its run's exec id, when it had a container whose leftovers may need sweeping.
    pub exec_id: Option<String>,
}

/// How many records a prune removed, by class.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Records of successful runs removed.
    pub succeeded: usize,
    /// Records of every other final status removed.
    pub failed: usize,
    /// Final records removed, oldest first, to bring the store under its bound in bytes.
    pub for_bytes: usize,
    /// The exec ids of the runs whose records were removed (their artifacts go with them).
    pub exec_ids: Vec<String>,
}

impl Pruned {
    /// Removes the artifacts folders of the pruned runs from the state folder.
    pub fn remove_artifacts(&self, state_dir: &Path) {
        for exec_id in &self.exec_ids {
            // An exec id is packbox's own UUID; anything else is not a folder name to use.
            if packbox::checked_artifact_name(exec_id.as_bytes()).is_err() {
                continue;
            }
            let folder = packbox::artifacts_folder(state_dir, exec_id);
            match std::fs::remove_dir_all(&folder) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    tracing::warn!("removing the artifacts in {}: {e}", folder.display())
                }
                _ => {}
            }
        }
    }
}

/// The schema version of the records at `path`; one newer than this packbox knows is refused
/// (a newer packbox wrote them).
fn schema_version(connection: &Connection, path: &Path) -> Result<i64, StoreError> {
    let found: i64 = connection
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            path: path.to_path_buf(),
            found,
        });
    }
    Ok(found)
}

/// The exec ids the execution records at `path` hold, read without changing the database (no
/// migration, no journal mode): `packbox gc` keeps those runs' artifacts folders to the server's
/// own retention. No database, or one no server wrote records in, holds none.
pub fn recorded_exec_ids(path: &Path) -> Result<HashSet<String>, StoreError> {
    use rusqlite::OpenFlags;
    if !path.exists() {
        return Ok(HashSet::new());
    }
    let open_error = |source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    };
    let connection = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(open_error)?;
    connection
        .busy_timeout(Duration::from_secs(5))
        .map_err(open_error)?;
    schema_version(&connection, path)?;
    let has_records: bool = connection
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'executions')",
            [],
            |row| row.get(0),
        )
        .map_err(open_error)?;
    if !has_records {
        return Ok(HashSet::new());
    }
    let mut statement = connection
        .prepare("SELECT exec_id FROM executions WHERE exec_id IS NOT NULL")
        .map_err(open_error)?;
    let ids = statement
        .query_map([], |row| row.get::<_, String>(0))
        .map_err(open_error)?
        .collect::<Result<HashSet<String>, _>>()
        .map_err(open_error)?;
    Ok(ids)
}

/// How much of a run a record keeps.
#[derive(Clone, Copy, Debug)]
pub struct RecordLimits {
    /// Bytes kept of each output stream (head and tail), and the largest result kept.
    pub output_cap: usize,
}

impl Default for RecordLimits {
    fn default() -> Self {
        RecordLimits {
            output_cap: 1 << 20,
        }
    }
}

/// The size of the record store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreSize {
    /// Bytes of output, results and errors the records hold (what pruning by bytes bounds).
    pub content: u64,
    /// Bytes of the database file and its write-ahead log on disk.
    pub on_disk: u64,
}

/// The execution records of one server.
#[derive(Clone, Debug)]
pub struct Store {
    connection: Arc<Mutex<Connection>>,
    path: PathBuf,
    limits: RecordLimits,
}

impl Store {
    /// Opens (creating when needed, readable by the owner only) the database at `path`.
    pub fn open(path: &Path, limits: RecordLimits) -> Result<Store, StoreError> {
        let file_error = |source| StoreError::File {
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(file_error)?;
        }
        // SQLite gives its -wal and -shm files the database file's mode.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(file_error)?;
        let open_error = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let connection = Connection::open(path).map_err(open_error)?;
        connection
            .busy_timeout(Duration::from_secs(5))
            .map_err(open_error)?;
        // WAL: readers never block the writer. NORMAL: a commit survives the process being
        // killed (it is in the WAL); only a power loss may lose the last transactions.
        connection
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(open_error)?;
        connection
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_error)?;
        let found = schema_version(&connection, path)?;
        connection.execute_batch(SCHEMA).map_err(open_error)?;
        for (version, statements) in MIGRATIONS {
            if *version > found.max(1) {
                connection.execute_batch(statements).map_err(open_error)?;
            }
        }
        connection
            .pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(open_error)?;
        Ok(Store {
            connection: Arc::new(Mutex::new(connection)),
            path: path.to_path_buf(),
            limits,
        })
    }

    /// Runs `work` on the connection, off the async threads.
    async fn call<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let connection = Arc::clone(&self.connection);
        tokio::task::spawn_blocking(move || {
            let mut connection = connection.lock().map_err(|_| StoreError::Worker)?;
            work(&mut connection)
        })
        .await
        .map_err(|_| StoreError::Worker)?
    }

    /// Records a new execution as queued, unless its token already sent its idempotency key:
    /// then the execution that key made.
    pub async fn accept(&self, new: NewExecution) -> Result<Accepted, StoreError> {
        self.call(move |connection| {
            let tx = connection
                .transaction()
                .map_err(query("starting a transaction"))?;
            let scope = new.token_name.clone().unwrap_or_default();
            if let Some(key) = &new.idempotency_key {
                let existing = tx
                    .query_row(
                        &format!(
                            "SELECT {COLUMNS} FROM executions WHERE token_name = ?1 AND idempotency_key = ?2"
                        ),
                        params![scope, key],
                        record_from_row,
                    )
                    .optional()
                    .map_err(query("looking up an idempotency key"))?;
                if let Some(existing) = existing {
                    return Ok(Accepted::Existing(existing));
                }
            }
            let keys = serde_json::to_string(&new.keys).unwrap_or_else(|_| "[]".into());
            tx.execute(
                "INSERT INTO executions (id, action, status, token_name, idempotency_key,
                    pack_version, pack_digest, timeout_seconds, queued_at, keys)
                 VALUES (?1, ?2, 'queued', ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    new.id,
                    new.action,
                    scope,
                    new.idempotency_key,
                    new.pack_version,
                    new.pack_digest,
                    new.timeout_seconds as i64,
                    now_ms(),
                    keys,
                ],
            )
            .map_err(query("recording a new execution"))?;
            let record = get_in(&tx, &new.id)?;
            tx.commit().map_err(query("committing a new execution"))?;
            record
                .map(Accepted::New)
                .ok_or(StoreError::Worker)
        })
        .await
    }

    /// The execution a token's idempotency key made, if any.
    pub async fn find_by_key(
        &self,
        token_name: Option<&str>,
        key: &str,
    ) -> Result<Option<Record>, StoreError> {
        let (scope, key) = (token_name.unwrap_or_default().to_string(), key.to_string());
        self.call(move |connection| {
            connection
                .query_row(
                    &format!(
                        "SELECT {COLUMNS} FROM executions WHERE token_name = ?1 AND idempotency_key = ?2"
                    ),
                    params![scope, key],
                    record_from_row,
                )
                .optional()
                .map_err(query("looking up an idempotency key"))
        })
        .await
    }

    /// Marks a queued execution running (its image is being prepared or its action runs).
    pub async fn running(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_string();
        self.call(move |connection| {
            connection
                .execute(
                    "UPDATE executions SET status = 'running', started_at = ?2
                     WHERE id = ?1 AND status = 'queued'",
                    params![id, now_ms()],
                )
                .map_err(query("marking an execution running"))?;
            Ok(())
        })
        .await
    }

    /// Notes the exec id of the run's container once it started, so a crash can be traced to
    /// its container.
    pub async fn container_started(&self, id: &str, exec_id: &str) -> Result<(), StoreError> {
        let (id, exec_id) = (id.to_string(), exec_id.to_string());
        self.call(move |connection| {
            connection
                .execute(
                    "UPDATE executions SET exec_id = ?2 WHERE id = ?1 AND status = 'running'",
                    params![id, exec_id],
                )
                .map_err(query("noting an execution's container"))?;
            Ok(())
        })
        .await
    }

    /// Records how an execution ended; returns the final record. An execution that already
    /// ended keeps its first ending.
    pub async fn finish(&self, id: &str, ending: Ending) -> Result<Option<Record>, StoreError> {
        let id = id.to_string();
        let ending = ending.clipped(self.limits.output_cap);
        self.call(move |connection| {
            let result = ending
                .result
                .as_ref()
                .map(|r| serde_json::to_string(r).unwrap_or_default());
            let bytes = ending.stdout.len()
                + ending.stderr.len()
                + result.as_ref().map_or(0, String::len)
                + ending.error.as_ref().map_or(0, String::len)
                + ending.result_error.as_ref().map_or(0, String::len)
                // The artifacts' files count toward the store's bound, so pruning for space
                // removes them with their records.
                + ending.artifacts.iter().map(|a| a.size as usize).sum::<usize>();
            let artifacts = serde_json::to_string(&StoredArtifacts {
                files: &ending.artifacts,
                refused: &ending.artifacts_refused,
            })
            .unwrap_or_default();
            let sandbox = ending
                .sandbox
                .as_ref()
                .map(|s| serde_json::to_string(s).unwrap_or_default());
            let egress = ending
                .egress
                .as_ref()
                .map(|e| serde_json::to_string(e).unwrap_or_default());
            let warnings = serde_json::to_string(&ending.warnings).unwrap_or_default();
            connection
                .execute(
                    "UPDATE executions SET status = ?2, exec_id = COALESCE(?3, exec_id),
                        exit_code = ?4, result = ?5, stdout = ?6, stderr = ?7,
                        stdout_truncated = ?8, stderr_truncated = ?9, error = ?10, sandbox = ?11,
                        image = ?12, runtime = ?13, runtime_version = ?14, duration_ms = ?15,
                        prepare_ms = ?16, finished_at = ?17, result_truncated = ?18,
                        result_error = ?19, bytes = ?20, egress = ?21, attune_exec_id = ?22,
                        warnings = ?23, artifacts = ?24
                     WHERE id = ?1 AND status IN ('queued', 'running')",
                    params![
                        id,
                        ending.status.as_str(),
                        ending.exec_id,
                        ending.exit_code,
                        result,
                        ending.stdout,
                        ending.stderr,
                        ending.stdout_truncated,
                        ending.stderr_truncated,
                        ending.error,
                        sandbox,
                        ending.image,
                        ending.runtime,
                        ending.runtime_version,
                        ending.duration_ms.map(|d| d as i64),
                        ending.prepare_ms.map(|d| d as i64),
                        now_ms(),
                        ending.result_truncated,
                        ending.result_error,
                        bytes as i64,
                        egress,
                        ending.attune_exec_id.map(|id| id as i64),
                        warnings,
                        artifacts,
                    ],
                )
                .map_err(query("recording how an execution ended"))?;
            get_in(connection, &id)
        })
        .await
    }

    /// One execution, whole.
    pub async fn get(&self, id: &str) -> Result<Option<Record>, StoreError> {
        let id = id.to_string();
        self.call(move |connection| get_in(connection, &id)).await
    }

    /// Executions newest first, without their output, filtered by action and status.
    pub async fn list(&self, list: ListQuery) -> Result<Page, StoreError> {
        self.call(move |connection| {
            let mut statement = connection
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM executions
                     WHERE (?1 IS NULL OR action = ?1) AND (?2 IS NULL OR status = ?2)
                       AND (?3 IS NULL OR seq < ?3) AND (?5 IS NULL OR token_name = ?5)
                     ORDER BY seq DESC LIMIT ?4"
                ))
                .map_err(query("listing executions"))?;
            let rows = statement
                .query_map(
                    params![
                        list.action,
                        list.status.map(ExecStatus::as_str),
                        list.before,
                        list.limit as i64 + 1,
                        list.token,
                    ],
                    |row| Ok((row.get::<_, i64>(0)?, record_from_row(row)?)),
                )
                .map_err(query("listing executions"))?;
            let mut records = Vec::new();
            for row in rows {
                records.push(row.map_err(query("reading an execution"))?);
            }
            let next_cursor = (records.len() > list.limit)
                .then(|| {
                    let last = list.limit.checked_sub(1)?;
                    records.get(last).map(|(seq, _)| seq.to_string())
                })
                .flatten();
            records.truncate(list.limit);
            Ok(Page {
                executions: records
                    .into_iter()
                    .map(|(_, record)| summary(&record))
                    .collect(),
                next_cursor,
            })
        })
        .await
    }

    /// Marks every execution that was queued or running as abandoned: at start-up, when no run
    /// of this store can still be going on. Returns them, so their containers can be swept.
    pub async fn abandon_unfinished(&self) -> Result<Vec<Abandoned>, StoreError> {
        self.call(|connection| {
            let tx = connection
                .transaction()
                .map_err(query("starting a transaction"))?;
            let abandoned = {
                let mut statement = tx
                    .prepare(
                        "SELECT id, exec_id FROM executions WHERE status IN ('queued', 'running')",
                    )
                    .map_err(query("finding unfinished executions"))?;
                let rows = statement
                    .query_map([], |row| {
                        Ok(Abandoned {
                            id: row.get(0)?,
                            exec_id: row.get(1)?,
                        })
                    })
                    .map_err(query("finding unfinished executions"))?;
                rows.collect::<Result<Vec<_>, _>>()
                    .map_err(query("finding unfinished executions"))?
            };
            tx.execute(
                "UPDATE executions SET status = 'abandoned', finished_at = ?1,
                    error = 'the server stopped before the run ended'
                 WHERE status IN ('queued', 'running')",
                params![now_ms()],
            )
            .map_err(query("marking executions abandoned"))?;
            tx.commit()
                .map_err(query("committing abandoned executions"))?;
            Ok(abandoned)
        })
        .await
    }

    /// The store's size: what the records hold, and the files on disk.
    pub async fn size(&self) -> Result<StoreSize, StoreError> {
        let path = self.path.clone();
        self.call(move |connection| {
            let content: i64 = connection
                .query_row(
                    "SELECT COALESCE(SUM(bytes), 0) FROM executions",
                    [],
                    |row| row.get(0),
                )
                .map_err(query("measuring the records"))?;
            let mut on_disk = 0;
            for suffix in ["", "-wal"] {
                let mut file = path.clone().into_os_string();
                file.push(suffix);
                on_disk += std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
            }
            Ok(StoreSize {
                content: content.max(0) as u64,
                on_disk,
            })
        })
        .await
    }

    /// Removes final records past their class's age or count (successes, and everything else),
    /// then the oldest final records while all of them hold more than `max_bytes`; queued and
    /// running ones are never touched.
    pub async fn prune(&self, retention: Retention, max_bytes: u64) -> Result<Pruned, StoreError> {
        self.call(move |connection| {
            let now = now_ms();
            let mut pruned = Pruned::default();
            for (class, keep, count) in [
                (
                    "status = 'succeeded'",
                    retention.succeeded,
                    &mut pruned.succeeded,
                ),
                (
                    "status NOT IN ('succeeded', 'queued', 'running')",
                    retention.failed,
                    &mut pruned.failed,
                ),
            ] {
                let cutoff = now.saturating_sub(keep.max_age.as_millis() as i64);
                *count += delete(
                    connection,
                    &format!("DELETE FROM executions WHERE {class} AND finished_at < ?1"),
                    params![cutoff],
                    "pruning old executions",
                    &mut pruned.exec_ids,
                )?;
                *count += delete(
                    connection,
                    &format!(
                        "DELETE FROM executions WHERE {class} AND seq < (
                            SELECT MIN(seq) FROM (
                                SELECT seq FROM executions WHERE {class}
                                ORDER BY seq DESC LIMIT ?1))"
                    ),
                    params![keep.max_count as i64],
                    "pruning surplus executions",
                    &mut pruned.exec_ids,
                )?;
            }
            pruned.for_bytes = prune_bytes(connection, max_bytes, &mut pruned.exec_ids)?;
            Ok(pruned)
        })
        .await
    }
}

/// Removes the oldest final records until all records hold at most `max_bytes`.
fn prune_bytes(
    connection: &Connection,
    max_bytes: u64,
    exec_ids: &mut Vec<String>,
) -> Result<usize, StoreError> {
    let total: i64 = connection
        .query_row(
            "SELECT COALESCE(SUM(bytes), 0) FROM executions",
            [],
            |row| row.get(0),
        )
        .map_err(query("measuring the records"))?;
    let excess = total.saturating_sub(max_bytes.min(i64::MAX as u64) as i64);
    if excess <= 0 {
        return Ok(0);
    }
    // The newest final record whose removal, with every older one, frees enough.
    let cutoff: Option<i64> = connection
        .query_row(
            "SELECT seq FROM (
                SELECT seq, SUM(bytes) OVER (ORDER BY seq) AS freed FROM executions
                WHERE status NOT IN ('queued', 'running'))
             WHERE freed >= ?1 ORDER BY seq LIMIT 1",
            params![excess],
            |row| row.get(0),
        )
        .optional()
        .map_err(query("finding records to prune"))?;
    // None: even every final record is not enough, and all of them go.
    let cutoff = cutoff.unwrap_or(i64::MAX);
    delete(
        connection,
        "DELETE FROM executions WHERE status NOT IN ('queued', 'running') AND seq <= ?1",
        params![cutoff],
        "pruning records for space",
        exec_ids,
    )
}

/// Runs a `DELETE`, noting the exec ids of the records it removed; returns how many it removed.
fn delete(
    connection: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    what: &'static str,
    exec_ids: &mut Vec<String>,
) -> Result<usize, StoreError> {
    let mut statement = connection
        .prepare(&format!("{sql} RETURNING exec_id"))
        .map_err(query(what))?;
    let mut rows = statement.query(params).map_err(query(what))?;
    let mut removed = 0;
    while let Some(row) = rows.next().map_err(query(what))? {
        removed += 1;
        if let Some(exec_id) = row.get::<_, Option<String>>(0).map_err(query(what))? {
            exec_ids.push(exec_id);
        }
    }
    Ok(removed)
}

fn query(what: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |source| StoreError::Query { what, source }
}

fn get_in(connection: &Connection, id: &str) -> Result<Option<Record>, StoreError> {
    connection
        .query_row(
            &format!("SELECT {COLUMNS} FROM executions WHERE id = ?1"),
            params![id],
            record_from_row,
        )
        .optional()
        .map_err(query("reading an execution"))
}

fn record_from_row(row: &Row<'_>) -> rusqlite::Result<Record> {
    let json = |text: Option<String>| text.and_then(|t| serde_json::from_str(&t).ok());
    let keys: Option<String> = row.get(28)?;
    let stored: ReadArtifacts = row
        .get::<_, Option<String>>(32)?
        .and_then(|a| serde_json::from_str(&a).ok())
        .unwrap_or_default();
    let status: String = row.get(3)?;
    let token_name: String = row.get(4)?;
    Ok(Record {
        id: row.get(1)?,
        action: row.get(2)?,
        status: ExecStatus::parse(&status).unwrap_or(ExecStatus::Error),
        token_name: (!token_name.is_empty()).then_some(token_name),
        idempotency_key: row.get(5)?,
        keys: keys
            .and_then(|k| serde_json::from_str(&k).ok())
            .unwrap_or_default(),
        exec_id: row.get(6)?,
        attune_exec_id: row.get::<_, Option<i64>>(30)?.map(|id| id.max(0) as u64),
        warnings: row
            .get::<_, Option<String>>(31)?
            .and_then(|w| serde_json::from_str(&w).ok())
            .unwrap_or_default(),
        pack_version: row.get(7)?,
        pack_digest: row.get(8)?,
        timeout_seconds: row.get::<_, i64>(9)?.max(0) as u64,
        exit_code: row.get(10)?,
        result: json(row.get(11)?),
        result_truncated: row.get(26)?,
        result_error: row.get(27)?,
        stdout: row.get(12)?,
        stderr: row.get(13)?,
        stdout_truncated: row.get(14)?,
        stderr_truncated: row.get(15)?,
        error: row.get(16)?,
        sandbox: json(row.get(17)?),
        image: row.get(18)?,
        runtime: row.get(19)?,
        runtime_version: row.get(20)?,
        duration_ms: row.get::<_, Option<i64>>(21)?.map(|d| d.max(0) as u64),
        prepare_ms: row.get::<_, Option<i64>>(22)?.map(|d| d.max(0) as u64),
        queued_at: rfc3339(row.get(23)?),
        started_at: row.get::<_, Option<i64>>(24)?.map(rfc3339),
        finished_at: row.get::<_, Option<i64>>(25)?.map(rfc3339),
        egress: json(row.get(29)?),
        artifacts: stored.files,
        artifacts_refused: stored.refused,
    })
}

/// The `artifacts` column: what a run kept and refused.
#[derive(Serialize)]
struct StoredArtifacts<'a> {
    files: &'a [Artifact],
    refused: &'a [RefusedArtifact],
}

/// The `artifacts` column, read back (empty for records without one).
#[derive(Default, Deserialize)]
struct ReadArtifacts {
    #[serde(default)]
    files: Vec<Artifact>,
    #[serde(default)]
    refused: Vec<RefusedArtifact>,
}

/// A record as listings show it: everything but its output and result.
fn summary(record: &Record) -> Value {
    let mut value = serde_json::to_value(record).unwrap_or(Value::Null);
    if let Some(object) = value.as_object_mut() {
        for heavy in ["stdout", "stderr", "result", "sandbox", "egress"] {
            object.remove(heavy);
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use packbox::Keep;

    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            Store::open(&dir.path().join("records.sqlite"), RecordLimits::default()).expect("open");
        (dir, store)
    }

    fn new(id: &str, token: Option<&str>, key: Option<&str>) -> NewExecution {
        NewExecution {
            id: id.into(),
            action: "p.a".into(),
            token_name: token.map(str::to_string),
            idempotency_key: key.map(str::to_string),
            pack_version: "1.0.0".into(),
            pack_digest: "d".repeat(64),
            timeout_seconds: 60,
            keys: Vec::new(),
        }
    }

    async fn accepted(store: &Store, new: NewExecution) -> Record {
        match store.accept(new).await.expect("accept") {
            Accepted::New(record) => record,
            Accepted::Existing(record) => panic!("already there: {record:?}"),
        }
    }

    fn ended(status: ExecStatus) -> Ending {
        Ending::without_outcome(status, format!("ended {}", status.as_str()))
    }

    #[tokio::test]
    async fn an_accepted_execution_is_queued_and_readable() {
        let (_dir, store) = store();
        let record = accepted(&store, new("e1", Some("ci"), None)).await;
        assert_eq!(record.status, ExecStatus::Queued);
        assert_eq!(record.token_name.as_deref(), Some("ci"));
        assert!(record.queued_at.ends_with('Z'), "{}", record.queued_at);
        assert_eq!(store.get("e1").await.expect("get"), Some(record));
        assert_eq!(store.get("nope").await.expect("get"), None);
    }

    #[tokio::test]
    async fn an_idempotency_key_gives_back_the_first_execution_of_its_token() {
        let (_dir, store) = store();
        let first = accepted(&store, new("e1", Some("ci"), Some("k"))).await;
        match store
            .accept(new("e2", Some("ci"), Some("k")))
            .await
            .expect("accept")
        {
            Accepted::Existing(existing) => assert_eq!(existing.id, first.id),
            Accepted::New(record) => panic!("ran twice: {record:?}"),
        }
        // Another token's key is its own.
        accepted(&store, new("e3", Some("ops"), Some("k"))).await;
        accepted(&store, new("e4", None, Some("k"))).await;
        assert!(matches!(
            store
                .accept(new("e5", None, Some("k")))
                .await
                .expect("accept"),
            Accepted::Existing(_)
        ));
    }

    #[tokio::test]
    async fn the_first_ending_stays() {
        let (_dir, store) = store();
        accepted(&store, new("e1", None, None)).await;
        store.running("e1").await.expect("running");
        let running = store.get("e1").await.expect("get").expect("there");
        assert_eq!(running.status, ExecStatus::Running);
        assert!(running.started_at.is_some());
        let done = store
            .finish("e1", ended(ExecStatus::Failed))
            .await
            .expect("finish")
            .expect("there");
        assert_eq!(done.status, ExecStatus::Failed);
        assert!(done.finished_at.is_some());
        let again = store
            .finish("e1", ended(ExecStatus::Cancelled))
            .await
            .expect("finish")
            .expect("there");
        assert_eq!(again.status, ExecStatus::Failed, "a final status is final");
    }

    #[tokio::test]
    async fn listings_page_newest_first_and_filter() {
        let (_dir, store) = store();
        for n in 0..7 {
            let mut execution = new(&format!("e{n}"), None, None);
            if n % 2 == 0 {
                execution.action = "p.even".into();
            }
            accepted(&store, execution).await;
        }
        store
            .finish("e6", ended(ExecStatus::Succeeded))
            .await
            .expect("finish");
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = store
                .list(ListQuery {
                    limit: 3,
                    before: cursor,
                    ..ListQuery::default()
                })
                .await
                .expect("list");
            assert!(page.executions.iter().all(|e| e.get("stdout").is_none()));
            seen.extend(
                page.executions
                    .iter()
                    .map(|e| e["id"].as_str().unwrap_or("").to_string()),
            );
            match page.next_cursor {
                Some(next) => cursor = Some(next.parse().expect("a number")),
                None => break,
            }
        }
        assert_eq!(seen, ["e6", "e5", "e4", "e3", "e2", "e1", "e0"]);
        let even = store
            .list(ListQuery {
                action: Some("p.even".into()),
                limit: 10,
                ..ListQuery::default()
            })
            .await
            .expect("list");
        assert_eq!(even.executions.len(), 4);
        assert_eq!(even.next_cursor, None);
        let none = store
            .list(ListQuery {
                limit: 0,
                ..ListQuery::default()
            })
            .await
            .expect("an empty page, not a panic");
        assert!(none.executions.is_empty());
        let succeeded = store
            .list(ListQuery {
                status: Some(ExecStatus::Succeeded),
                limit: 10,
                ..ListQuery::default()
            })
            .await
            .expect("list");
        assert_eq!(succeeded.executions.len(), 1);
        assert_eq!(succeeded.executions[0]["id"], "e6");
    }

    #[tokio::test]
    async fn unfinished_executions_are_abandoned_at_the_next_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("records.sqlite");
        {
            let store = Store::open(&path, RecordLimits::default()).expect("open");
            accepted(&store, new("queued", None, None)).await;
            accepted(&store, new("running", None, None)).await;
            store.running("running").await.expect("running");
            store
                .container_started("running", "exec-1")
                .await
                .expect("started");
            accepted(&store, new("done", None, None)).await;
            store
                .finish("done", ended(ExecStatus::Succeeded))
                .await
                .expect("finish");
        }
        let store = Store::open(&path, RecordLimits::default()).expect("reopen");
        let mut abandoned = store.abandon_unfinished().await.expect("abandon");
        abandoned.sort_by(|a, b| a.id.cmp(&b.id));
        assert_eq!(abandoned.len(), 2);
        assert_eq!(abandoned[1].exec_id.as_deref(), Some("exec-1"));
        for id in ["queued", "running"] {
            let record = store.get(id).await.expect("get").expect("there");
            assert_eq!(record.status, ExecStatus::Abandoned);
            assert!(record.error.is_some() && record.finished_at.is_some());
        }
        let done = store.get("done").await.expect("get").expect("there");
        assert_eq!(done.status, ExecStatus::Succeeded);
    }

    #[tokio::test]
    async fn pruning_keeps_each_class_by_count_and_age_and_never_touches_live_runs() {
        let (_dir, store) = store();
        for n in 0..5 {
            accepted(&store, new(&format!("ok{n}"), None, None)).await;
            store
                .finish(&format!("ok{n}"), ended(ExecStatus::Succeeded))
                .await
                .expect("finish");
            accepted(&store, new(&format!("bad{n}"), None, None)).await;
            store
                .finish(&format!("bad{n}"), ended(ExecStatus::Failed))
                .await
                .expect("finish");
        }
        accepted(&store, new("live", None, None)).await;
        // Two records finished long ago, one of each class.
        let day_ms: i64 = 24 * 3600 * 1000;
        {
            let connection = store.connection.lock().expect("lock");
            connection
                .execute(
                    "UPDATE executions SET finished_at = finished_at - ?1 WHERE id IN ('ok4', 'bad4')",
                    params![40 * day_ms],
                )
                .expect("backdate");
        }
        let retention = Retention {
            succeeded: Keep {
                max_age: Duration::from_secs(7 * 86400),
                max_count: 2,
            },
            failed: Keep {
                max_age: Duration::from_secs(30 * 86400),
                max_count: 3,
            },
            prune_every: Duration::from_secs(60),
        };
        let pruned = store.prune(retention, u64::MAX).await.expect("prune");
        // ok4 by age, then ok0 and ok1 by count; bad4 by age, then bad0 by count.
        assert_eq!(
            pruned,
            Pruned {
                succeeded: 3,
                failed: 2,
                for_bytes: 0,
                exec_ids: Vec::new(),
            }
        );
        let left: Vec<String> = store
            .list(ListQuery {
                limit: 100,
                ..ListQuery::default()
            })
            .await
            .expect("list")
            .executions
            .iter()
            .map(|e| e["id"].as_str().unwrap_or("").to_string())
            .collect();
        assert_eq!(left, ["live", "bad3", "ok3", "bad2", "ok2", "bad1"]);
    }

    #[tokio::test]
    async fn artifacts_are_recorded_count_toward_the_bound_and_go_with_their_record() {
        let (dir, store) = store();
        let listed = Artifact {
            name: "report.txt".into(),
            size: 14,
            sha256: "a".repeat(64),
        };
        let refused = RefusedArtifact {
            name: "link".into(),
            reason: "not a regular file (a symlink)".into(),
        };
        for (id, exec_id) in [("old", "exec-old"), ("new", "exec-new")] {
            accepted(&store, new(id, None, None)).await;
            let mut ending = ended(ExecStatus::Succeeded);
            ending.exec_id = Some(exec_id.into());
            ending.artifacts = vec![listed.clone()];
            ending.artifacts_refused = vec![refused.clone()];
            let record = store
                .finish(id, ending)
                .await
                .expect("finish")
                .expect("record");
            assert_eq!(record.artifacts, std::slice::from_ref(&listed));
            assert_eq!(record.artifacts_refused, std::slice::from_ref(&refused));
        }
        let state = dir.path().join("state");
        for exec_id in ["exec-old", "exec-new"] {
            let folder = packbox::artifacts_folder(&state, exec_id);
            std::fs::create_dir_all(&folder).expect("folder");
            std::fs::write(folder.join("report.txt"), b"two artifacts\n").expect("file");
        }
        let size = store.size().await.expect("size");
        assert!(size.content >= 28, "the artifacts' bytes count: {size:?}");
        let retention = Retention {
            succeeded: Keep {
                max_age: Duration::from_secs(86400),
                max_count: 1,
            },
            failed: Keep {
                max_age: Duration::from_secs(86400),
                max_count: 10,
            },
            prune_every: Duration::from_secs(60),
        };
        let pruned = store.prune(retention, u64::MAX).await.expect("prune");
        assert_eq!(pruned.exec_ids, ["exec-old"]);
        pruned.remove_artifacts(&state);
        assert!(!packbox::artifacts_folder(&state, "exec-old").exists());
        assert!(
            packbox::artifacts_folder(&state, "exec-new")
                .join("report.txt")
                .is_file()
        );
    }

    #[tokio::test]
    async fn a_listing_for_one_token_holds_only_its_executions() {
        let (_dir, store) = store();
        accepted(&store, new("a1", Some("team-a"), None)).await;
        accepted(&store, new("b1", Some("team-b"), None)).await;
        accepted(&store, new("a2", Some("team-a"), None)).await;
        let page = store
            .list(ListQuery {
                token: Some("team-a".into()),
                limit: 10,
                ..ListQuery::default()
            })
            .await
            .expect("list");
        let ids: Vec<&str> = page
            .executions
            .iter()
            .filter_map(|e| e["id"].as_str())
            .collect();
        assert_eq!(ids, ["a2", "a1"]);
    }

    #[tokio::test]
    async fn key_names_are_kept_with_their_scopes() {
        let (_dir, store) = store();
        let mut execution = new("e1", Some("ci"), None);
        execution.keys = vec![
            KeyUse {
                name: "api_key".into(),
                scope: "pack:p".into(),
            },
            KeyUse {
                name: "token".into(),
                scope: "request".into(),
            },
        ];
        let record = accepted(&store, execution.clone()).await;
        assert_eq!(record.keys, execution.keys);
        let value = serde_json::to_value(&record).expect("json");
        assert_eq!(value["keys"][0]["scope"], "pack:p");
    }

    #[tokio::test]
    async fn long_output_is_kept_as_head_and_tail_and_the_store_is_pruned_by_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(
            &dir.path().join("records.sqlite"),
            RecordLimits { output_cap: 1000 },
        )
        .expect("open");
        for n in 0..6 {
            let id = format!("e{n}");
            accepted(&store, new(&id, None, None)).await;
            let mut ending = ended(ExecStatus::Succeeded);
            ending.stdout = format!("HEAD{}TAIL", "o".repeat(50_000));
            ending.stderr = "e".repeat(200);
            ending.result = Some(Value::String("r".repeat(5000)));
            let record = store
                .finish(&id, ending)
                .await
                .expect("finish")
                .expect("there");
            assert!(record.stdout.starts_with("HEAD") && record.stdout.ends_with("TAIL"));
            assert!(record.stdout.len() < 1200, "{}", record.stdout.len());
            assert!(record.stdout_truncated && !record.stderr_truncated);
            assert_eq!(record.result, None);
            assert!(record.result_truncated);
            assert!(
                record
                    .result_error
                    .as_deref()
                    .is_some_and(|e| e.contains("1000 bytes"))
            );
        }
        accepted(&store, new("live", None, None)).await;
        let before = store.size().await.expect("size");
        assert!(before.content > 6 * 1000, "{before:?}");
        assert!(before.on_disk > 0);
        let retention = Retention {
            succeeded: Keep {
                max_age: Duration::from_secs(86400),
                max_count: 100,
            },
            failed: Keep {
                max_age: Duration::from_secs(86400),
                max_count: 100,
            },
            prune_every: Duration::from_secs(60),
        };
        let bound = before.content / 2;
        let pruned = store.prune(retention, bound).await.expect("prune");
        assert!(pruned.for_bytes >= 3, "{pruned:?}");
        let after = store.size().await.expect("size");
        assert!(after.content <= bound, "{after:?} > {bound}");
        // The newest stay, and a live one is never pruned.
        assert!(store.get("e5").await.expect("get").is_some());
        assert!(store.get("e0").await.expect("get").is_none());
        assert!(store.get("live").await.expect("get").is_some());
        let all = store.prune(retention, 0).await.expect("prune");
        assert!(all.for_bytes >= 1);
        assert!(store.get("live").await.expect("get").is_some());
    }

    #[test]
    fn a_first_version_database_gains_the_new_columns() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("records.sqlite");
        {
            let connection = Connection::open(&path).expect("open");
            connection.execute_batch(SCHEMA).expect("v1 schema");
            connection
                .pragma_update(None, "user_version", 1)
                .expect("v1");
            connection
                .execute(
                    "INSERT INTO executions (id, action, status, timeout_seconds, queued_at)
                     VALUES ('old', 'p.a', 'succeeded', 60, 0)",
                    [],
                )
                .expect("an old record");
        }
        let store = Store::open(&path, RecordLimits::default()).expect("migrated");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let old = runtime
            .block_on(store.get("old"))
            .expect("get")
            .expect("kept");
        assert!(old.keys.is_empty());
        assert!(old.egress.is_none());
        let version: i64 = Connection::open(&path)
            .expect("open")
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .expect("version");
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[tokio::test]
    async fn the_database_is_private_to_its_owner() {
        use std::os::unix::fs::PermissionsExt;
        let (dir, store) = store();
        accepted(&store, new("e1", None, None)).await;
        for name in ["records.sqlite", "records.sqlite-wal"] {
            let mode = std::fs::metadata(dir.path().join(name))
                .expect("exists")
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "{name}: {mode:o}");
        }
    }

    #[test]
    fn a_newer_schema_is_refused_not_rewritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("records.sqlite");
        let connection = Connection::open(&path).expect("open");
        connection
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .expect("set");
        drop(connection);
        let err = Store::open(&path, RecordLimits::default()).expect_err("newer");
        assert!(err.to_string().contains("newer"), "{err}");
    }
}
