//! API v1 over HTTP: routes, request parsing, responses and errors. Handlers parse and answer;
//! the work is the dispatcher's. Every route but `/healthz` needs a bearer token when the
//! server has any, and checks the token's scope: an action it may not run is refused (403,
//! naming the scope); an execution it may not read is not found (404, as one that does not
//! exist, so ids leak nothing); keys, audit and metrics need `admin`. The document describing it
//! all is `docs/openapi.json`, served as is.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use packbox::{CheckedAction, KeyScope, KeyStoreError, StreamKind};
use tokio::sync::mpsc;

use super::auth::{Caller, Denied, Tokens};
use super::executions::{
    CancelRefused, Dispatcher, Live, MAX_PROBLEMS, ParameterProblem, Refused, Submission,
    Submitted, short,
};
use super::held::{Held, Place};
use super::metrics::CONTENT_TYPE as METRICS_CONTENT_TYPE;
use super::output::{Piece, Position};
use super::records::{ExecStatus, ListQuery, Record, Store};

/// The OpenAPI document of API v1, kept in the repository and served as it is.
pub const OPENAPI: &str = include_str!("../../docs/openapi.json");
/// Text of stored output sent in one event.
const STORED_EVENT_BYTES: usize = 16 << 10;
/// How often an idle event stream gets a comment, so proxies keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How long `/readyz` waits for the engine.
const ENGINE_CHECK: Duration = Duration::from_secs(3);
/// Executions per page when a listing does not say.
const DEFAULT_PAGE: usize = 50;
/// The most executions one page holds.
const MAX_PAGE: usize = 500;
/// Events buffered for one follower of an execution's output.
const FOLLOWER_BUFFER: usize = 4;
/// The longest message an error answer carries.
const MAX_MESSAGE: usize = 4096;

/// What the handlers share.
pub struct App {
    /// The server's executions: submitted, looked up, cancelled.
    pub dispatcher: Arc<Dispatcher>,
    /// The API tokens every request but `/healthz` is checked against; none: no check (the
    /// server then listens on loopback only).
    pub tokens: Tokens,
    /// Longest a request may wait for an execution to end (`wait`).
    pub max_wait: Duration,
    /// Largest request body, in bytes.
    pub max_body: usize,
    /// Time a client has to send its request body.
    pub client_timeout: Duration,
    /// What verifying the runtimes at start-up found: `None` while it runs.
    pub runtimes: Arc<Mutex<Option<Result<(), String>>>>,
    /// Places for requests that hold their connection (waits, output followers).
    pub held: Held,
}

/// The routes of the server.
pub fn router(app: Arc<App>) -> Router {
    let authenticated = Router::new()
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/executions", post(create).get(list))
        .route("/v1/executions/{id}", get(show))
        .route("/v1/executions/{id}/cancel", post(cancel))
        .route("/v1/executions/{id}/output", get(output))
        .route("/v1/executions/{id}/artifacts/{name}", get(artifact))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/actions", get(actions))
        .route("/v1/runtimes", get(runtimes))
        .route("/v1/keys", get(list_keys))
        .route("/v1/keys/{scope}/{name}", put(set_key).delete(remove_key))
        .route("/v1/audit", get(audit))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            Arc::clone(&app),
            authenticate,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .merge(super::console::routes())
        .merge(authenticated)
        .layer(middleware::from_fn_with_state(
            Arc::clone(&app),
            log_request,
        ))
        .with_state(app)
}

/// An error answer: `{"error": {"code", "message", "problems"?}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    problems: Vec<ParameterProblem>,
    retry_after: Option<Duration>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            problems: Vec::new(),
            retry_after: None,
        }
    }

    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    fn no_execution(id: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no execution `{}`", short(id, 200)),
        )
    }

    /// 429 for a request that may not hold its connection now.
    fn held_refused(message: String) -> ApiError {
        ApiError {
            retry_after: Some(Duration::from_secs(1)),
            ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "busy", message)
        }
    }

    fn internal(what: &str, error: &dyn std::error::Error) -> ApiError {
        tracing::error!("{what}: {}", packbox::error_chain(error));
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("{what} failed; the server's log says why"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // An answer stays small whatever the request held.
        let mut error = json!({"code": self.code, "message": short(&self.message, MAX_MESSAGE)});
        if !self.problems.is_empty() {
            let problems: Vec<&ParameterProblem> =
                self.problems.iter().take(MAX_PROBLEMS + 1).collect();
            error["problems"] = json!(problems);
        }
        let mut response = (self.status, axum::Json(json!({ "error": error }))).into_response();
        if let Some(after) = self.retry_after
            && let Ok(value) = HeaderValue::from_str(&after.as_secs().max(1).to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"packbox\""),
            );
        }
        response
    }
}

impl From<Refused> for ApiError {
    fn from(refused: Refused) -> ApiError {
        match refused {
            Refused::NotFound(message) => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
            }
            Refused::Invalid { message, problems } => ApiError {
                problems,
                ..ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
            },
            Refused::BrokenPack(message) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_pack", message)
            }
            Refused::Busy { retry_after } => ApiError {
                retry_after: Some(retry_after),
                ..ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "busy",
                    "the queue is full; try again after the time Retry-After says",
                )
            },
            Refused::Draining => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the server is shutting down and accepts no new executions",
            ),
            Refused::KeyReused { action } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                format!("this idempotency key was used for another request (action {action})"),
            ),
            Refused::NoSpace(message) => ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "insufficient_storage",
                message,
            ),
            Refused::KeyStore => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the key store could not give this run its keys; the server's log says why",
            ),
            Refused::Store(e) => ApiError::internal("recording the execution", &e),
        }
    }
}

/// Logs and counts each request's method, route, status and time (never headers or bodies).
async fn log_request(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "(unmatched)".into());
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let ms = started.elapsed().as_millis() as u64;
    app.dispatcher.metrics().request(&route, status);
    if status >= 500 {
        tracing::warn!(%method, route, status, ms, "request");
    } else {
        tracing::debug!(%method, route, status, ms, "request");
    }
    response
}

/// Lets a request through when it carries a known token (or when the server has none).
async fn authenticate(State(app): State<Arc<App>>, mut request: Request, next: Next) -> Response {
    let caller = if app.tokens.is_empty() {
        Caller::anyone()
    } else {
        let header = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        match app.tokens.check(header) {
            Ok(caller) => caller,
            Err(denied) => {
                let message = match denied {
                    Denied::Missing => "this server needs `Authorization: Bearer TOKEN`",
                    Denied::Wrong => "the bearer token is not known to this server",
                };
                return ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
                    .into_response();
            }
        }
    };
    request.extensions_mut().insert(caller);
    next.run(request).await
}

async fn healthz() -> impl IntoResponse {
    axum::Json(json!({"status": "ok"}))
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such route in API v1",
    )
}

/// The body of `POST /v1/executions`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    action: String,
    #[serde(default)]
    parameters: Map<String, Value>,
    /// `KEY=VALUE` strings converted by each parameter's declared type, as `packbox run -p`
    /// does; they win over `parameters`.
    #[serde(default)]
    assignments: Vec<String>,
    #[serde(default)]
    secrets: Map<String, Value>,
    timeout_seconds: Option<u64>,
    #[serde(default)]
    wait: bool,
    idempotency_key: Option<String>,
}

/// The caller the authentication layer found (every authenticated route has one).
fn caller_of(request: &Request) -> Caller {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or_else(Caller::anyone)
}

/// Refuses a caller without `admin`.
fn require_admin(caller: &Caller, what: &str) -> Result<(), ApiError> {
    if caller.scope.is_admin() {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "{what} needs a token with the `admin` scope"
        )))
    }
}

async fn create(State(app): State<Arc<App>>, request: Request) -> Result<Response, ApiError> {
    let caller = caller_of(&request);
    let header_key = request
        .headers()
        .get("idempotency-key")
        .map(|v| {
            v.to_str()
                .map(str::to_string)
                .map_err(|_| ApiError::bad_request("Idempotency-Key: expected visible ASCII"))
        })
        .transpose()?;
    let bytes = read_json_body(&app, request).await?;
    let body: CreateBody = parse_body(&bytes)?;
    if !caller.scope.may_run(&body.action) {
        return Err(ApiError::forbidden(format!(
            "this token may not run `{}` (its scope: {})",
            short(&body.action, 200),
            caller.scope.run_text()
        )));
    }
    let idempotency_key = match (header_key, body.idempotency_key) {
        (Some(a), Some(b)) if a != b => {
            return Err(ApiError::bad_request(
                "the Idempotency-Key header and the idempotency_key field differ",
            ));
        }
        (Some(key), _) | (None, Some(key)) => Some(check_key(key)?),
        (None, None) => None,
    };
    let timeout = match body.timeout_seconds {
        Some(0) => {
            return Err(ApiError::bad_request(
                "timeout_seconds: expected at least 1",
            ));
        }
        other => other.map(Duration::from_secs),
    };
    let submitted = app
        .dispatcher
        .submit(Submission {
            action: body.action,
            parameters: body.parameters,
            assignments: body.assignments,
            secrets: body.secrets,
            timeout,
            token_name: caller.name.clone(),
            idempotency_key,
        })
        .await?;
    let Submitted {
        mut record,
        replayed,
    } = submitted;
    // Past the bound on held requests the answer comes at once (202): the client waits with
    // GET, which says when to come back.
    if body.wait
        && !record.status.is_final()
        && let Ok(_place) = app.held.take(caller.who(), None)
    {
        record = app
            .dispatcher
            .get(&record.id, app.max_wait)
            .await
            .map_err(|e| ApiError::internal("reading the execution", &e))?
            .unwrap_or(record);
    }
    let status = match (record.status.is_final(), replayed) {
        (false, _) => StatusCode::ACCEPTED,
        (true, false) => StatusCode::CREATED,
        (true, true) => StatusCode::OK,
    };
    let location = format!("/v1/executions/{}", record.id);
    let mut response = (status, axum::Json(record)).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// An idempotency key: 1 to 255 visible ASCII characters.
fn check_key(key: String) -> Result<String, ApiError> {
    let valid = (1..=255).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic());
    if valid {
        Ok(key)
    } else {
        Err(ApiError::bad_request(
            "idempotency key: expected 1 to 255 visible ASCII characters",
        ))
    }
}

/// Reads a JSON request body, bounded in size and in time (a client that sends it slowly is
/// cut off).
async fn read_json_body(app: &App, request: Request) -> Result<Bytes, ApiError> {
    let is_json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected a JSON body (Content-Type: application/json)",
        ));
    }
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the request body is larger than {} bytes", app.max_body),
        )
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|length| length > app.max_body) {
        return Err(too_large());
    }
    let limited = http_body_util::Limited::new(request.into_body(), app.max_body);
    let read = tokio::time::timeout(
        app.client_timeout,
        http_body_util::BodyExt::collect(limited),
    )
    .await;
    match read {
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            "the request body did not arrive in time",
        )),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(_)) => Err(ApiError::bad_request("the request body could not be read")),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

/// Parses a JSON body, naming the field that is wrong. Values of `parameters` and `secrets` are
/// never quoted back: either may hold a secret.
fn parse_body<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.inner();
        let message = if inner.is_syntax() || inner.is_eof() {
            format!("malformed JSON: {inner}")
        } else if path == "value" {
            "value: expected a JSON value".to_string()
        } else if path.starts_with("secrets")
            || path.starts_with("parameters")
            || path.starts_with("assignments")
        {
            let field = path.split(['.', '[']).next().unwrap_or_default();
            if field == "assignments" {
                "assignments: expected a list of KEY=VALUE strings".to_string()
            } else {
                format!("{field}: expected an object of names to values")
            }
        } else if path == "." {
            inner.to_string()
        } else {
            format!("{path}: {inner}")
        };
        ApiError::bad_request(message)
    })
}

/// One artifact of an execution the caller may read (404 otherwise, as for the execution):
/// its bytes as they were kept, by a name the record lists, never a path the request makes up.
async fn artifact(
    State(app): State<Arc<App>>,
    Path((id, name)): Path<(String, String)>,
    request: Request,
) -> Result<Response, ApiError> {
    use tokio::io::AsyncReadExt;
    let caller = caller_of(&request);
    let record = readable(&app, &caller, &id).await?;
    let no_artifact = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "execution `{}` has no artifact `{}`",
                short(&id, 200),
                short(&name, 300)
            ),
        )
    };
    let (Some(exec_id), Some(listed)) = (
        record.exec_id.as_deref(),
        record.artifacts.iter().find(|a| a.name == name),
    ) else {
        return Err(no_artifact());
    };
    let path =
        packbox::artifacts_folder(&app.dispatcher.settings().state_dir, exec_id).join(&listed.name);
    let file = tokio::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => no_artifact(),
            _ => ApiError::internal("reading an artifact", &e),
        })?;
    let size = file
        .metadata()
        .await
        .map_err(|e| ApiError::internal("reading an artifact", &e))?;
    if !size.is_file() || size.len() != listed.size {
        return Err(ApiError::internal(
            "reading an artifact",
            &std::io::Error::other(format!(
                "{} is not the file the record lists",
                path.display()
            )),
        ));
    }
    let body =
        axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(file.take(listed.size)));
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (header::CONTENT_DISPOSITION, "attachment"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        [(header::CONTENT_LENGTH, listed.size.to_string())],
        body,
    )
        .into_response())
}

/// The query of `GET /v1/executions/{id}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ShowQuery {
    /// Seconds to wait for the execution to end (capped by the server's maximum).
    wait: Option<u64>,
}

/// The record of an execution the caller may read; 404 for one it may not, as for one that
/// does not exist.
async fn readable(app: &App, caller: &Caller, id: &str) -> Result<Record, ApiError> {
    let record = app
        .dispatcher
        .get(id, Duration::ZERO)
        .await
        .map_err(|e| ApiError::internal("reading the execution", &e))?
        .ok_or_else(|| ApiError::no_execution(id))?;
    if caller.may_read(record.token_name.as_deref()) {
        Ok(record)
    } else {
        Err(ApiError::no_execution(id))
    }
}

async fn show(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    query: Result<Query<ShowQuery>, QueryRejection>,
    request: Request,
) -> Result<Response, ApiError> {
    let caller = caller_of(&request);
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let wait = Duration::from_secs(query.wait.unwrap_or(0)).min(app.max_wait);
    let mut record = readable(&app, &caller, &id).await?;
    if !wait.is_zero() && !record.status.is_final() {
        let _place = app
            .held
            .take(caller.who(), None)
            .map_err(|refused| ApiError::held_refused(refused.message(app.held.limits())))?;
        record = app
            .dispatcher
            .get(&id, wait)
            .await
            .map_err(|e| ApiError::internal("reading the execution", &e))?
            .unwrap_or(record);
    }
    Ok(axum::Json(record).into_response())
}

/// A page's size (`limit`, checked) and where it starts (`cursor`, one this server gave).
fn page_bounds(
    limit: Option<usize>,
    cursor: Option<String>,
) -> Result<(usize, Option<i64>), ApiError> {
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit: expected 1 to {MAX_PAGE}, found {limit}"
        )));
    }
    let before = cursor
        .map(|cursor| {
            cursor
                .parse::<i64>()
                .map_err(|_| ApiError::bad_request("cursor: not a cursor this server gave"))
        })
        .transpose()?;
    Ok((limit, before))
}

/// The query of `GET /v1/executions`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    action: Option<String>,
    status: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

async fn list(
    State(app): State<Arc<App>>,
    query: Result<Query<ListParams>, QueryRejection>,
    request: Request,
) -> Result<Response, ApiError> {
    let caller = caller_of(&request);
    let Query(params) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let status = params
        .status
        .map(|name| {
            ExecStatus::parse(&name).ok_or_else(|| {
                let known: Vec<&str> = ExecStatus::ALL.iter().map(|s| s.as_str()).collect();
                ApiError::bad_request(format!(
                    "status: `{name}` is not a status (expected one of {})",
                    known.join(", ")
                ))
            })
        })
        .transpose()?;
    let (limit, before) = page_bounds(params.limit, params.cursor)?;
    let page = app
        .dispatcher
        .store()
        .list(ListQuery {
            // A token that reads only its own sees only its own.
            token: (!caller.scope.reads_all()).then(|| caller.name.clone().unwrap_or_default()),
            action: params.action,
            status,
            limit,
            before,
        })
        .await
        .map_err(|e| ApiError::internal("listing executions", &e))?;
    Ok(axum::Json(page).into_response())
}

async fn cancel(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let caller = caller_of(&request);
    let record = readable(&app, &caller, &id).await?;
    if !caller.may_cancel(record.token_name.as_deref()) {
        return Err(ApiError::forbidden(
            "this token may cancel only the executions it started (`admin` cancels any)",
        ));
    }
    match app.dispatcher.cancel(&id).await {
        Ok(record) => Ok((StatusCode::ACCEPTED, axum::Json(record)).into_response()),
        Err(CancelRefused::NotFound) => Err(ApiError::no_execution(&id)),
        Err(CancelRefused::Final(record)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_ended",
            format!(
                "execution `{id}` already ended ({})",
                record.status.as_str()
            ),
        )),
        Err(CancelRefused::Store(e)) => Err(ApiError::internal("reading the execution", &e)),
    }
}

/// The actions of the server's packs the caller may run, as `packbox actions list --json` shows
/// them; the packs' problems for `admin` tokens only (they name the operator's files).
async fn actions(State(app): State<Arc<App>>, request: Request) -> Result<Response, ApiError> {
    let caller = caller_of(&request);
    let dispatcher = Arc::clone(&app.dispatcher);
    let listed = tokio::task::spawn_blocking(move || {
        let reports = packbox::check_packs(
            dispatcher.packs(),
            dispatcher.catalog(),
            dispatcher.settings(),
        );
        let actions: Vec<Value> = reports
            .iter()
            .flat_map(|r| &r.actions)
            .map(CheckedAction::to_json)
            .filter(|action| {
                action["ref"]
                    .as_str()
                    .is_some_and(|name| caller.scope.may_run(name))
            })
            .collect();
        let problems: Vec<String> = reports
            .iter()
            .flat_map(|r| &r.problems)
            .filter(|_| caller.scope.is_admin())
            .map(ToString::to_string)
            .collect();
        json!({"actions": actions, "problems": problems})
    })
    .await
    .map_err(|e| ApiError::internal("listing actions", &e))?;
    Ok(axum::Json(listed).into_response())
}

/// The runtime versions and what the probe cache knows of them (nothing is probed).
async fn runtimes(State(app): State<Arc<App>>) -> Result<Response, ApiError> {
    let statuses = app
        .dispatcher
        .executor()
        .list_runtimes()
        .await
        .map_err(|e| ApiError::internal("listing runtimes", &e))?;
    Ok(axum::Json(json!({ "runtimes": statuses })).into_response())
}

/// Whether the server takes executions: the engine answers, the runtimes were verified, and it
/// is not shutting down.
async fn readyz(State(app): State<Arc<App>>) -> Response {
    let engine = match tokio::time::timeout(ENGINE_CHECK, app.dispatcher.executor().ping()).await {
        Ok(Ok(())) => "ok".to_string(),
        Ok(Err(e)) => {
            app.dispatcher.metrics().engine_error();
            packbox::error_chain(&e)
        }
        Err(_) => {
            app.dispatcher.metrics().engine_error();
            format!(
                "the engine did not answer within {} s",
                ENGINE_CHECK.as_secs()
            )
        }
    };
    let runtimes = match app.runtimes.lock().ok().and_then(|r| r.clone()) {
        None => "verifying the runtime images".to_string(),
        Some(Ok(())) => "ok".to_string(),
        Some(Err(why)) => why,
    };
    let accepting = if app.dispatcher.is_draining() {
        "shutting_down"
    } else {
        "ok"
    };
    let ready = engine == "ok" && runtimes == "ok" && accepting == "ok";
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "ready": ready,
        "checks": {"engine": engine, "runtimes": runtimes, "accepting": accepting},
    });
    (status, axum::Json(body)).into_response()
}

async fn metrics(State(app): State<Arc<App>>, request: Request) -> Result<Response, ApiError> {
    require_admin(&caller_of(&request), "/metrics")?;
    let dispatcher = &app.dispatcher;
    let size = dispatcher.store().size().await.unwrap_or_default();
    let warm = dispatcher
        .executor()
        .warm_kinds()
        .into_iter()
        .map(|kind| (kind.action, kind.image, kind.idle));
    let mismatches = dispatcher.executor().exit_status_mismatches();
    let text = dispatcher.metrics().render(
        dispatcher.queued(),
        dispatcher.running(),
        warm,
        size,
        app.held.total(),
        mismatches,
    );
    Ok(([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], text).into_response())
}

/// stdout and stderr as Server-Sent Events: live while the execution runs, then what was
/// stored; resumed after the position `Last-Event-ID` names.
async fn output(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let caller = caller_of(&request);
    let from = match request.headers().get("last-event-id") {
        None => Position::default(),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(Position::parse)
            .ok_or_else(|| {
                ApiError::bad_request("Last-Event-ID: not an event id of this stream")
            })?,
    };
    let (events, mut received) = mpsc::channel::<Event>(FOLLOWER_BUFFER);
    let store = app.dispatcher.store().clone();
    let take_place = |caller: &Caller| {
        app.held
            .take(caller.who(), Some(&id))
            .map_err(|refused| ApiError::held_refused(refused.message(app.held.limits())))
    };
    match app.dispatcher.live(&id) {
        Some(live) if caller.may_read(live.owner.as_deref()) => {
            let place = take_place(&caller)?;
            tokio::spawn(follow_live(live, store, id, from, events, place));
        }
        Some(_) => return Err(ApiError::no_execution(&id)),
        None => {
            let record = readable(&app, &caller, &id).await?;
            let place = take_place(&caller)?;
            tokio::spawn(async move {
                send_stored(&record, from, &events).await;
                drop(place);
            });
        }
    }
    let stream =
        futures::stream::poll_fn(move |cx| received.poll_recv(cx)).map(Ok::<Event, Infallible>);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response())
}

/// Sends a running execution's output as it comes, then the rest from its record, then `end`.
async fn follow_live(
    live: Arc<Live>,
    store: Store,
    id: String,
    mut at: Position,
    events: mpsc::Sender<Event>,
    _place: Place,
) {
    let mut changes = live.output.subscribe();
    loop {
        changes.borrow_and_update();
        let (pieces, next, ended) = live.output.read(at);
        let quiet = pieces.is_empty();
        for piece in pieces {
            if events.send(piece_event(piece)).await.is_err() {
                return;
            }
        }
        at = next;
        if ended {
            break;
        }
        if quiet {
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { break },
                () = events.closed() => return,
            }
        }
    }
    let record = match live.ended().await {
        Some(record) => Some(record),
        None => store.get(&id).await.ok().flatten(),
    };
    if let Some(record) = record {
        send_stored(&record, at, &events).await;
    }
}

/// Sends what a record holds of its output after `from`, then `end`.
async fn send_stored(record: &Record, mut at: Position, events: &mpsc::Sender<Event>) {
    for stream in [StreamKind::Stdout, StreamKind::Stderr] {
        let text = match stream {
            StreamKind::Stdout => &record.stdout,
            StreamKind::Stderr => &record.stderr,
        };
        let mut offset = match stream {
            StreamKind::Stdout => at.stdout,
            StreamKind::Stderr => at.stderr,
        } as usize;
        while offset < text.len() {
            while !text.is_char_boundary(offset) {
                offset += 1;
            }
            let mut end = (offset + STORED_EVENT_BYTES).min(text.len());
            while !text.is_char_boundary(end) {
                end += 1;
            }
            let piece = &text[offset..end];
            offset = end;
            match stream {
                StreamKind::Stdout => at.stdout = offset as u64,
                StreamKind::Stderr => at.stderr = offset as u64,
            }
            let event = piece_event(Piece::Text {
                stream,
                text: piece.to_string(),
                after: at,
            });
            if events.send(event).await.is_err() {
                return;
            }
        }
    }
    let end = json!({"status": record.status, "exit_code": record.exit_code});
    let _ = events
        .send(
            Event::default()
                .event("end")
                .id(at.id())
                .data(end.to_string()),
        )
        .await;
}

/// An output piece as an event: text as a JSON string (exact, whatever it holds), a gap as
/// `{"stream", "skipped"}`; the id is the position after it.
fn piece_event(piece: Piece) -> Event {
    let name = |stream: StreamKind| match stream {
        StreamKind::Stdout => "stdout",
        StreamKind::Stderr => "stderr",
    };
    match piece {
        Piece::Text {
            stream,
            text,
            after,
        } => Event::default()
            .event(name(stream))
            .id(after.id())
            .data(Value::String(text).to_string()),
        Piece::Gap {
            stream,
            skipped,
            after,
        } => Event::default()
            .event("gap")
            .id(after.id())
            .data(json!({"stream": name(stream), "skipped": skipped}).to_string()),
    }
}

/// The body of `PUT /v1/keys/{scope}/{name}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyBody {
    value: Value,
}

/// A key-store failure as an answer: the caller's input (400, 404), a store without its key
/// (409), or the server's (500, logged).
fn key_error(error: KeyStoreError) -> ApiError {
    match error {
        KeyStoreError::NotFound { .. } => {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", error.to_string())
        }
        KeyStoreError::NoKey => ApiError::new(StatusCode::CONFLICT, "read_only", error.to_string()),
        KeyStoreError::BadScope { .. }
        | KeyStoreError::BadName { .. }
        | KeyStoreError::TooLarge { .. } => ApiError::bad_request(error.to_string()),
        other => ApiError::internal("the key store", &other),
    }
}

/// Runs a key-store call off the async threads.
async fn with_keys<T: Send + 'static>(
    app: &App,
    work: impl FnOnce(&packbox::KeyStore) -> Result<T, KeyStoreError> + Send + 'static,
) -> Result<T, ApiError> {
    let keys = app.dispatcher.keys().clone();
    tokio::task::spawn_blocking(move || work(&keys))
        .await
        .map_err(|e| ApiError::internal("the key store", &e))?
        .map_err(key_error)
}

/// The keys of the key store by scope and name, never a value.
async fn list_keys(State(app): State<Arc<App>>, request: Request) -> Result<Response, ApiError> {
    require_admin(&caller_of(&request), "the key store")?;
    let writable = app.dispatcher.keys().is_open();
    let keys = with_keys(&app, |keys| keys.list()).await?;
    Ok(axum::Json(json!({"keys": keys, "writable": writable})).into_response())
}

async fn set_key(
    State(app): State<Arc<App>>,
    Path((scope, name)): Path<(String, String)>,
    request: Request,
) -> Result<Response, ApiError> {
    let caller = caller_of(&request);
    require_admin(&caller, "the key store")?;
    let scope = KeyScope::parse(&scope).map_err(key_error)?;
    let bytes = read_json_body(&app, request).await?;
    let body: KeyBody = parse_body(&bytes)?;
    let who = caller.who().to_string();
    let (set_scope, set_name) = (scope.clone(), name.clone());
    with_keys(&app, move |keys| {
        keys.set(&set_scope, &set_name, &body.value, &who)
    })
    .await?;
    let entry = with_keys(&app, |keys| keys.list())
        .await?
        .into_iter()
        .find(|entry| entry.scope == scope && entry.name == name);
    Ok(axum::Json(entry).into_response())
}

async fn remove_key(
    State(app): State<Arc<App>>,
    Path((scope, name)): Path<(String, String)>,
    request: Request,
) -> Result<Response, ApiError> {
    let caller = caller_of(&request);
    require_admin(&caller, "the key store")?;
    let scope = KeyScope::parse(&scope).map_err(key_error)?;
    let who = caller.who().to_string();
    with_keys(&app, move |keys| keys.remove(&scope, &name, &who)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The query of `GET /v1/audit`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditParams {
    limit: Option<usize>,
    cursor: Option<String>,
}

/// Changes to the key store, newest first.
async fn audit(
    State(app): State<Arc<App>>,
    query: Result<Query<AuditParams>, QueryRejection>,
    request: Request,
) -> Result<Response, ApiError> {
    require_admin(&caller_of(&request), "the audit trail")?;
    let Query(params) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let (limit, before) = page_bounds(params.limit, params.cursor)?;
    let page = with_keys(&app, move |keys| keys.changes(before, limit)).await?;
    Ok(axum::Json(page).into_response())
}
