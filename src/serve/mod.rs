//! `packbox serve`: the executor as an HTTP service. It lives in the binary and uses the
//! library's facade only, as the command line does.
//!
//! ```text
//! http (connections, header deadline)
//!   ├─ console (the web console's built-in files at `/`: a client of the API, no data)
//!   └─ api (routes, parsing, errors; auth: bearer tokens)
//!        └─ executions (plan, admission, records, runs, waits, cancellation)
//!             ├─ records (SQLite, WAL: written before a run starts)
//!             └─ packbox::Executor (warm pool, the engine)
//! ```
//!
//! Start-up: the state folder is locked (one server per folder), runs left queued or running by
//! a server that died are marked `abandoned` and leftover containers swept, then the port
//! opens. Shutdown (SIGTERM): no new executions, running ones get the drain time, then are
//! cancelled; the warm pool is removed and the process exits 0.

pub mod api;
mod auth;
mod clip;
mod console;
mod disk;
mod executions;
mod held;
mod http;
mod metrics;
mod output;
pub mod records;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use packbox::{Catalog, Executor, KeyStore, KeyStoreError, Settings};
use tokio_util::sync::CancellationToken;

use self::auth::{TokenError, Tokens};
use self::executions::{Dispatcher, Limits};
use self::records::{RecordLimits, Store, StoreError};

/// The file of execution records (and the key store), in the state folder.
const RECORDS_FILE: &str = packbox::KEYSTORE_DATABASE;
/// The lock that keeps a second server off the same state folder.
const LOCK_FILE: &str = "serve.lock";

/// The exec ids a server's execution records in `state_dir` hold: their artifacts folders are
/// the server's to remove, with their records (`packbox gc` leaves them).
pub fn recorded_exec_ids(
    state_dir: &Path,
) -> Result<std::collections::HashSet<String>, StoreError> {
    records::recorded_exec_ids(&state_dir.join(RECORDS_FILE))
}

/// Why the server could not start or stopped on an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// No packs folder was given: the server has nothing to run.
    #[error(
        "no packs folder: pass --packs DIR (or set PACKBOX_PACKS, or serve.packs in the config file)"
    )]
    NoPacks,
    /// The packs folder given is not a folder.
    #[error("packs folder {} does not exist or is not a folder", .0.display())]
    PacksMissing(PathBuf),
    /// The API tokens cannot be used (unreadable file, a bad line, a short token).
    #[error(transparent)]
    Tokens(#[from] TokenError),
    /// No tokens and a listen address off loopback: anyone who reaches it could run actions.
    #[error(
        "serve.listen = {listen}: without a token the server listens on loopback only; give it tokens (--token-file FILE, serve.token_file or PACKBOX_SERVE_TOKEN) or listen on 127.0.0.1"
    )]
    Exposed {
        /// The address asked for.
        listen: SocketAddr,
    },
    /// Another server holds the state folder's lock: two would share one record database.
    #[error("state folder {}: another packbox serve is using it", .0.display())]
    Locked(PathBuf),
    /// The state folder's lock file could not be made or locked.
    #[error("state folder {}: cannot take its lock", path.display())]
    Lock {
        /// The state folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The execution records could not be opened or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The key store could not be opened with the key-encryption key given.
    #[error(transparent)]
    Keys(#[from] KeyStoreError),
    /// The library failed: settings, catalog or engine.
    #[error(transparent)]
    Library(#[from] packbox::Error),
    /// The listen address could not be bound.
    #[error("cannot listen on {listen}")]
    Bind {
        /// The address.
        listen: SocketAddr,
        /// Why (in use, not permitted).
        #[source]
        source: std::io::Error,
    },
}

impl ServeError {
    /// Whether the settings or the command line are wrong (exit code 2), rather than the
    /// machine or the engine (125).
    pub fn is_input(&self) -> bool {
        match self {
            ServeError::NoPacks
            | ServeError::PacksMissing(_)
            | ServeError::Tokens(_)
            | ServeError::Exposed { .. } => true,
            ServeError::Keys(e) => e.is_input(),
            ServeError::Library(e) => e.fault() == packbox::Fault::Input,
            _ => false,
        }
    }
}

/// Runs the server until `stop` is cancelled, then shuts it down gracefully.
pub async fn run(
    settings: Settings,
    catalog: Catalog,
    stop: CancellationToken,
) -> Result<(), ServeError> {
    let serve = settings.serve.clone();
    let packs = serve.packs.clone().ok_or(ServeError::NoPacks)?;
    if !packs.is_dir() {
        return Err(ServeError::PacksMissing(packs));
    }
    let tokens = Tokens::load(serve.token_file.as_deref(), serve.env_token.as_ref())?;
    if tokens.is_empty() {
        if !serve.listen.ip().is_loopback() {
            return Err(ServeError::Exposed {
                listen: serve.listen,
            });
        }
        say(format_args!(
            "packbox serve: WARNING: no API token is set: anyone who can reach {} on this machine can run actions; set --token-file or PACKBOX_SERVE_TOKEN",
            serve.listen
        ));
    }
    let _lock = lock_state(&settings.state_dir)?;
    let store = Store::open(
        &settings.state_dir.join(RECORDS_FILE),
        RecordLimits {
            output_cap: serve.records.max_output as usize,
        },
    )?;
    let keys = KeyStore::open(&settings.state_dir, settings.keystore.key_file.as_deref())?;
    if !keys.is_open() {
        say(format_args!(
            "packbox serve: the key store is empty and read-only: no key-encryption key is set (--key-file, keystore.key_file or PACKBOX_KEY_FILE)"
        ));
    }
    let abandoned = store.abandon_unfinished().await?;
    for run in &abandoned {
        tracing::warn!(
            execution = %run.id,
            exec_id = run.exec_id.as_deref().unwrap_or("-"),
            "a run of a server that stopped is marked abandoned"
        );
    }
    // Stops what the executor does off the runs' path (runtime verification) once the
    // executions are drained; runs are cancelled by the drain itself.
    let executor_stop = CancellationToken::new();
    let executor = Executor::connect(settings.clone(), catalog.clone())
        .await?
        .with_warm_pool_sized(serve.warm)
        .with_shutdown(executor_stop.clone());
    // The containers of a server that died go before this one takes requests.
    executor.start_up_sweep().await;
    let listener = tokio::net::TcpListener::bind(serve.listen)
        .await
        .map_err(|source| ServeError::Bind {
            listen: serve.listen,
            source,
        })?;
    let address = listener.local_addr().unwrap_or(serve.listen);
    let dispatcher = Arc::new(Dispatcher::new(
        executor,
        settings.clone(),
        catalog,
        Limits {
            packs: packs.clone(),
            max_concurrent: serve.max_concurrent,
            max_queue: serve.max_queue,
            max_timeout: serve.max_timeout,
            max_output: settings.run.max_output,
            records_max_bytes: serve.records.max_bytes,
            min_free_disk: serve.records.min_free_disk,
        },
        (store.clone(), keys.clone()),
        Arc::new(metrics::Metrics::new()),
    ));
    let runtimes = Arc::new(Mutex::new(None));
    let verifying = tokio::spawn(verify_runtimes(
        Arc::clone(&dispatcher),
        Arc::clone(&runtimes),
    ));
    let app = Arc::new(api::App {
        runtimes,
        dispatcher: Arc::clone(&dispatcher),
        tokens,
        max_wait: serve.max_wait,
        max_body: serve.max_body,
        client_timeout: serve.client_timeout,
        held: held::Held::new(serve.held),
    });
    let http_stop = CancellationToken::new();
    let http = tokio::spawn(http::serve(
        listener,
        api::router(app),
        http::ConnectionLimits {
            max_connections: serve.max_connections,
            header_timeout: serve.client_timeout,
            close_grace: Duration::from_secs(5),
        },
        http_stop.clone(),
    ));
    let pruner = tokio::spawn(prune_records(
        store,
        keys,
        settings.state_dir.clone(),
        serve.retention,
        serve.records.max_bytes,
        stop.clone(),
    ));
    let trimmer = tokio::spawn(trim_pool(Arc::clone(&dispatcher), stop.clone()));
    say(format_args!(
        "packbox serve: listening on http://{address} (packs: {})",
        packs.display()
    ));

    stop.cancelled().await;
    say(format_args!(
        "packbox serve: stopping: no new executions, running ones get {} s",
        serve.drain.as_secs()
    ));
    dispatcher.drain(serve.drain).await;
    executor_stop.cancel();
    let _ = verifying.await;
    http_stop.cancel();
    let _ = http.await;
    let _ = pruner.await;
    let _ = trimmer.await;
    dispatcher.executor().close().await;
    say(format_args!("packbox serve: stopped"));
    Ok(())
}

/// Verifies the catalog's runtime versions (probing what the cache does not know), for
/// `/readyz`: ready once at least one version is available.
async fn verify_runtimes(
    dispatcher: Arc<Dispatcher>,
    found: Arc<Mutex<Option<Result<(), String>>>>,
) {
    let verdict = match dispatcher.executor().verify_runtimes().await {
        Ok(statuses) if statuses.iter().any(|s| s.is_available()) => {
            let available = statuses.iter().filter(|s| s.is_available()).count();
            tracing::info!(available, of = statuses.len(), "runtime versions verified");
            Ok(())
        }
        Ok(_) => Err(
            "no runtime version is available: build the runtime images (scripts/build-images)"
                .to_string(),
        ),
        Err(e) => Err(packbox::error_chain(&e)),
    };
    if let Ok(mut found) = found.lock() {
        *found = Some(verdict);
    }
}

/// How often pooled containers nobody needs, and leftovers of dead packbox processes, are
/// removed.
const TRIM_EVERY: Duration = Duration::from_secs(15);

/// Now and then, until `stop`: trims the warm pool (kinds nobody runs, containers above recent
/// demand) and sweeps containers of packbox processes that are gone (a create the engine
/// finished after its killed requester was gone shows up only after the start-up sweep).
async fn trim_pool(dispatcher: Arc<Dispatcher>, stop: CancellationToken) {
    // The first round soon after the start-up sweep, for creates that were still in flight.
    let mut pause = Duration::from_secs(3);
    loop {
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = stop.cancelled() => return,
        }
        pause = TRIM_EVERY;
        let executor = dispatcher.executor();
        executor.trim_warm_pool().await;
        match executor.sweep_orphans().await {
            Ok(swept) if !swept.is_empty() => {
                tracing::warn!(
                    count = swept.len(),
                    "swept containers of packbox processes that are gone"
                )
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("sweeping leftover containers: {}", packbox::error_chain(&e)),
        }
    }
}

/// Removes old records (and key changes, kept as long as failures) now and then, until `stop`.
async fn prune_records(
    store: Store,
    keys: KeyStore,
    state_dir: std::path::PathBuf,
    retention: packbox::Retention,
    max_bytes: u64,
    stop: CancellationToken,
) {
    loop {
        let pruned = store.prune(retention, max_bytes).await;
        if let Ok(pruned) = &pruned {
            pruned.remove_artifacts(&state_dir);
        }
        match pruned {
            Ok(pruned) if pruned.succeeded + pruned.failed + pruned.for_bytes > 0 => {
                tracing::info!(
                    succeeded = pruned.succeeded,
                    failed = pruned.failed,
                    for_bytes = pruned.for_bytes,
                    "pruned old execution records"
                )
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("pruning records: {}", packbox::error_chain(&e)),
        }
        let keep = retention.failed;
        let keys = keys.clone();
        match tokio::task::spawn_blocking(move || keys.prune_changes(keep.max_age, keep.max_count))
            .await
        {
            Ok(Ok(0)) => {}
            Ok(Ok(pruned)) => tracing::info!(pruned, "pruned old key changes"),
            Ok(Err(e)) => tracing::warn!("pruning key changes: {}", packbox::error_chain(&e)),
            Err(_) => tracing::warn!("pruning key changes: the worker stopped"),
        }
        tokio::select! {
            () = tokio::time::sleep(retention.prune_every) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Takes the state folder's server lock, held until the returned file is dropped (or the
/// process dies: the kernel releases it).
fn lock_state(state_dir: &Path) -> Result<std::fs::File, ServeError> {
    let path = state_dir.join(LOCK_FILE);
    let lock_error = |source| ServeError::Lock {
        path: state_dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(state_dir).map_err(lock_error)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(lock_error)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(ServeError::Locked(state_dir.to_path_buf())),
        Err(std::fs::TryLockError::Error(source)) => Err(lock_error(source)),
    }
}

/// Says something on stderr, ignoring a stderr that is gone: a server whose supervisor's log pipe
/// closed must still drain, remove its pool and stop (`eprintln!` would panic there).
fn say(message: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{message}");
}
