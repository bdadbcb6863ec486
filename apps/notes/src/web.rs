//! HTTP: the routes — the HTML pages and the JSON API — and what their
//! handlers share (serving connections is `serve.rs`).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use privfork::fork_server::{ForkServer, ForkServerError};
use serde::Deserialize;
use serde_json::json;

use crate::config::Config;
use crate::pages;
use crate::roles::RENDER;
use crate::store::{NoteId, Store};
use crate::worker::Control;

/// What every handler shares.
pub struct App {
    config: Config,
    store: Arc<Store>,
    render: Arc<ForkServer>,
    control: Arc<Control>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").finish_non_exhaustive()
    }
}

impl App {
    /// The shared state of the handlers.
    pub fn new(
        config: Config,
        store: Arc<Store>,
        render: ForkServer,
        control: Arc<Control>,
    ) -> Arc<Self> {
        Arc::new(Self {
            config,
            store,
            render: Arc::new(render),
            control,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }
}

/// The handlers' state.
pub type Shared = Arc<App>;

/// The routes.
pub fn router(app: Shared) -> Router {
    let body_timeout = app.config.read_timeout();
    Router::new()
        .route("/", get(index))
        .route("/style.css", get(style))
        .route("/notes", post(form_create))
        .route("/notes/{id}", get(note_page))
        .route("/notes/{id}/delete", post(form_delete))
        .route("/api/notes", get(api_list).post(api_create))
        .route("/api/notes/{id}", get(api_get).delete(api_delete))
        .route("/api/status", get(api_status))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(middleware::from_fn(same_origin_writes))
        .layer(middleware::from_fn_with_state(Arc::clone(&app), known_host))
        .layer(middleware::from_fn(security_headers))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            body_timeout,
        ))
        .with_state(app)
}

// ---- errors -------------------------------------------------------------

/// A JSON error: `{"error": message}` with `status`.
fn json_error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

/// An HTML error page.
fn html_error(status: StatusCode, message: &str) -> Response {
    (status, Html(pages::error(status, message))).into_response()
}

fn is_api(path: &str) -> bool {
    path == "/api" || path.starts_with("/api/")
}

async fn not_found(req: Request) -> Response {
    let path = req.uri().path();
    if path.starts_with("/api/notes/") || path.starts_with("/notes/") {
        // `/api/notes/a/b`: what follows is not an id.
        let msg = "not a note id: an id is 32 lowercase hex digits";
        return if is_api(path) {
            json_error(StatusCode::BAD_REQUEST, msg)
        } else {
            html_error(StatusCode::BAD_REQUEST, msg)
        };
    }
    if is_api(path) {
        json_error(StatusCode::NOT_FOUND, format!("no such endpoint: {path}"))
    } else {
        html_error(StatusCode::NOT_FOUND, "There is no page here.")
    }
}

async fn method_not_allowed(req: Request) -> Response {
    let msg = format!(
        "method {} is not allowed on {}",
        req.method(),
        req.uri().path()
    );
    json_error(StatusCode::METHOD_NOT_ALLOWED, msg)
}

/// The id in a path, or the error to answer.
fn parse_id(id: Result<Path<String>, PathRejection>) -> Result<NoteId, String> {
    let Path(id) = id.map_err(|e| format!("not a note id: {e}"))?;
    NoteId::parse(&id).map_err(|_| "not a note id: an id is 32 lowercase hex digits".to_owned())
}

fn internal(what: &str, e: impl std::fmt::Display) -> String {
    eprintln!("{what}: {e}");
    format!("{what} failed")
}

// ---- middleware ---------------------------------------------------------

/// Headers on every answer: no script at all, nothing framed or sniffed.
async fn security_headers(req: Request, next: Next) -> Response {
    let api = is_api(req.uri().path());
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self' https:; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Not `no-referrer`: under it a browser sends `Origin: null` even on a
    // same-site form post, which the origin check must refuse. Other
    // sites still get no referrer.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if api {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

/// Refuses a request that names a host the service is not known by: with
/// DNS rebinding, a page on `evil.example` resolves its own name to this
/// machine and then reads and writes here as a same-origin page — but its
/// requests still say `Host: evil.example`. IP addresses (which no one
/// can rebind), `localhost` and the `--host` names pass; a request with
/// no `Host` (not a browser's) too.
async fn known_host(State(app): State<Shared>, req: Request, next: Next) -> Response {
    if let Err(why) = check_host(req.headers(), &app.config.hosts) {
        return if is_api(req.uri().path()) {
            json_error(StatusCode::MISDIRECTED_REQUEST, why)
        } else {
            html_error(StatusCode::MISDIRECTED_REQUEST, &why)
        };
    }
    next.run(req).await
}

fn check_host(h: &HeaderMap, allowed: &[String]) -> Result<(), String> {
    let Some(host) = h.get(header::HOST) else {
        return Ok(());
    };
    let host = host.to_str().map_err(|_| "unreadable Host".to_owned())?;
    let name = host_name(host);
    let ok = name.parse::<std::net::IpAddr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || allowed
            .iter()
            .any(|a| host_name(a).eq_ignore_ascii_case(name));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "this service is not known as {host:?} (start it with --host NAME to serve a name)"
        ))
    }
}

/// The name in a `Host` value: without the port, without an IPv6
/// literal's brackets.
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // An unclosed bracket is no IPv6 literal: the whole text, which
        // matches nothing.
        return rest.split_once(']').map_or(host, |(ip, _)| ip);
    }
    host.rsplit_once(':').map_or(host, |(n, _)| n)
}

/// Refuses writes (anything but GET and HEAD) that a browser sends from
/// another site: a cross-site form post cannot create or delete notes.
/// Clients that are not browsers send no `Origin` and pass.
async fn same_origin_writes(req: Request, next: Next) -> Response {
    if req.method() == Method::GET || req.method() == Method::HEAD {
        return next.run(req).await;
    }
    if let Err(why) = check_same_origin(req.headers()) {
        let msg = format!("cross-site request refused: {why}");
        return if is_api(req.uri().path()) {
            json_error(StatusCode::FORBIDDEN, msg)
        } else {
            html_error(StatusCode::FORBIDDEN, &msg)
        };
    }
    next.run(req).await
}

fn check_same_origin(h: &HeaderMap) -> Result<(), String> {
    if let Some(origin) = h.get(header::ORIGIN) {
        let origin = origin
            .to_str()
            .map_err(|_| "unreadable Origin".to_owned())?;
        let host = h
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .ok_or("Origin without Host")?;
        let same = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .is_some_and(|o| o.eq_ignore_ascii_case(host));
        if !same {
            return Err(format!("Origin {origin} is not this site ({host})"));
        }
        return Ok(());
    }
    match h.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        None | Some("same-origin") | Some("none") => Ok(()),
        Some(other) => Err(format!("Sec-Fetch-Site: {other}")),
    }
}

// ---- bodies -------------------------------------------------------------

/// Reads a request body up to the limit: 413 over it (checked first from
/// Content-Length, so a large body is not read), 408 when it is too slow.
async fn read_body(
    app: &App,
    headers: &HeaderMap,
    body: Body,
) -> Result<Bytes, (StatusCode, String)> {
    let limit = usize::try_from(app.config.max_body).unwrap_or(usize::MAX);
    let too_large = || {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is over the limit of {limit} bytes"),
        )
    };
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > app.config.max_body
    {
        return Err(too_large());
    }
    // The whole body within the read timeout (the body timeout layer only
    // bounds the wait for each piece: a byte now and then would hold the
    // connection forever).
    let read = tokio::time::timeout(app.config.read_timeout(), axum::body::to_bytes(body, limit));
    let Ok(read) = read.await else {
        return Err((
            StatusCode::REQUEST_TIMEOUT,
            "the body was not sent in time".to_owned(),
        ));
    };
    match read {
        Ok(b) => Ok(b),
        Err(e) => {
            let mut src: Option<&dyn std::error::Error> = Some(&e);
            while let Some(s) = src {
                if s.is::<http_body_util::LengthLimitError>() {
                    return Err(too_large());
                }
                if s.is::<tower_http::timeout::TimeoutError>() {
                    return Err((
                        StatusCode::REQUEST_TIMEOUT,
                        "the body was not sent in time".to_owned(),
                    ));
                }
                src = s.source();
            }
            Err((StatusCode::BAD_REQUEST, format!("reading the body: {e}")))
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewNote {
    text: String,
}

/// A note's text from a JSON or form body, checked.
fn note_text(bytes: &[u8], form: bool) -> Result<String, String> {
    let note: NewNote = if form {
        serde_urlencoded::from_bytes(bytes).map_err(|e| format!("bad form: {e}"))?
    } else {
        serde_json::from_slice(bytes).map_err(|e| format!("bad JSON: {e}"))?
    };
    if note.text.trim().is_empty() {
        return Err("the note is empty".into());
    }
    Ok(note.text)
}

// ---- the JSON API -------------------------------------------------------

async fn api_create(State(app): State<Shared>, headers: HeaderMap, body: Body) -> Response {
    let bytes = match read_body(&app, &headers, body).await {
        Ok(b) => b,
        Err((s, m)) => return json_error(s, m),
    };
    let text = match note_text(&bytes, false) {
        Ok(t) => t,
        Err(m) => return json_error(StatusCode::BAD_REQUEST, m),
    };
    match create(&app, text).await {
        Ok(id) => (
            StatusCode::CREATED,
            [(header::LOCATION, format!("/api/notes/{id}"))],
            axum::Json(json!({ "id": id.to_string() })),
        )
            .into_response(),
        Err(m) => json_error(StatusCode::INTERNAL_SERVER_ERROR, m),
    }
}

/// Runs a store operation on the blocking pool (the store syncs files);
/// a failure is logged and becomes "`what` failed".
async fn on_store<T: Send + 'static>(
    app: &App,
    what: &'static str,
    op: impl FnOnce(&Store) -> std::io::Result<T> + Send + 'static,
) -> Result<T, String> {
    let store = Arc::clone(&app.store);
    match tokio::task::spawn_blocking(move || op(&store)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(internal(what, e)),
        Err(e) => Err(internal(what, e)),
    }
}

/// Stores a note; returns once it is durable (file and directory synced).
async fn create(app: &App, text: String) -> Result<NoteId, String> {
    on_store(app, "storing the note", move |s| {
        s.create(&text).map(|n| n.id)
    })
    .await
}

async fn api_get(State(app): State<Shared>, id: Result<Path<String>, PathRejection>) -> Response {
    let id = match parse_id(id) {
        Ok(id) => id,
        Err(m) => return json_error(StatusCode::BAD_REQUEST, m),
    };
    match on_store(&app, "reading the note", move |s| s.get(&id)).await {
        Ok(Some(note)) => axum::Json(json!({
            "id": note.id.to_string(),
            "text": note.text,
            "created": time_text(note.created),
        }))
        .into_response(),
        Ok(None) => json_error(StatusCode::NOT_FOUND, "no such note"),
        Err(m) => json_error(StatusCode::INTERNAL_SERVER_ERROR, m),
    }
}

async fn api_delete(
    State(app): State<Shared>,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    let id = match parse_id(id) {
        Ok(id) => id,
        Err(m) => return json_error(StatusCode::BAD_REQUEST, m),
    };
    match delete(&app, id).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => json_error(StatusCode::NOT_FOUND, "no such note"),
        Err(m) => json_error(StatusCode::INTERNAL_SERVER_ERROR, m),
    }
}

async fn delete(app: &App, id: NoteId) -> Result<bool, String> {
    on_store(app, "deleting the note", move |s| s.delete(&id)).await
}

/// Pagination of the list.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Page {
    #[serde(default)]
    offset: usize,
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    20
}

/// Most notes on one page of the list.
const MAX_LIMIT: usize = 100;

async fn list(app: &App, page: &Page) -> Result<(Vec<crate::store::NoteMeta>, usize), String> {
    let (offset, limit) = (page.offset, page.limit);
    on_store(app, "listing notes", move |s| s.list(offset, limit)).await
}

fn check_page(page: Result<Query<Page>, QueryRejection>) -> Result<Page, String> {
    let Query(page) = page.map_err(|e| format!("bad query: {}", e.body_text()))?;
    if page.limit == 0 || page.limit > MAX_LIMIT {
        return Err(format!("limit must be 1 to {MAX_LIMIT}"));
    }
    Ok(page)
}

async fn api_list(
    State(app): State<Shared>,
    page: Result<Query<Page>, QueryRejection>,
) -> Response {
    let page = match check_page(page) {
        Ok(p) => p,
        Err(m) => return json_error(StatusCode::BAD_REQUEST, m),
    };
    match list(&app, &page).await {
        Ok((notes, total)) => {
            let next = (page.offset + notes.len() < total).then(|| {
                format!(
                    "/api/notes?offset={}&limit={}",
                    page.offset + notes.len(),
                    page.limit
                )
            });
            axum::Json(json!({
                "notes": notes.iter().map(|n| json!({
                    "id": n.id.to_string(),
                    "title": n.title,
                    "created": time_text(n.created),
                })).collect::<Vec<_>>(),
                "total": total,
                "offset": page.offset,
                "limit": page.limit,
                "next": next,
            }))
            .into_response()
        }
        Err(m) => json_error(StatusCode::INTERNAL_SERVER_ERROR, m),
    }
}

async fn api_status(State(app): State<Shared>) -> Response {
    if app.config.no_status {
        return json_error(
            StatusCode::NOT_FOUND,
            "status is switched off (--no-status)",
        );
    }
    match app.control.status().await {
        Ok(s) => axum::Json(s).into_response(),
        Err(m) => json_error(StatusCode::SERVICE_UNAVAILABLE, m),
    }
}

/// A note's creation time as RFC 3339 (UTC).
pub fn time_text(unix_ms: u64) -> String {
    let t = SystemTime::UNIX_EPOCH + Duration::from_millis(unix_ms);
    humantime::format_rfc3339_seconds(t).to_string()
}

// ---- the pages ----------------------------------------------------------

async fn style() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        pages::STYLE,
    )
        .into_response()
}

async fn index(State(app): State<Shared>, page: Result<Query<Page>, QueryRejection>) -> Response {
    let page = match check_page(page) {
        Ok(p) => p,
        Err(m) => return html_error(StatusCode::BAD_REQUEST, &m),
    };
    let notes = match list(&app, &page).await {
        Ok(n) => n,
        Err(m) => return html_error(StatusCode::INTERNAL_SERVER_ERROR, &m),
    };
    let status = if app.config.no_status {
        None
    } else {
        Some(app.control.status().await)
    };
    Html(pages::index(
        &notes.0,
        notes.1,
        page.offset,
        page.limit,
        status.as_ref(),
    ))
    .into_response()
}

async fn form_create(State(app): State<Shared>, headers: HeaderMap, body: Body) -> Response {
    let bytes = match read_body(&app, &headers, body).await {
        Ok(b) => b,
        Err((s, m)) => return html_error(s, &m),
    };
    let text = match note_text(&bytes, true) {
        // Browsers send a textarea's line breaks as CRLF.
        Ok(t) => t.replace("\r\n", "\n"),
        Err(m) => return html_error(StatusCode::BAD_REQUEST, &m),
    };
    match create(&app, text).await {
        Ok(id) => Redirect::to(&format!("/notes/{id}")).into_response(),
        Err(m) => html_error(StatusCode::INTERNAL_SERVER_ERROR, &m),
    }
}

async fn form_delete(
    State(app): State<Shared>,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    let id = match parse_id(id) {
        Ok(id) => id,
        Err(m) => return html_error(StatusCode::BAD_REQUEST, &m),
    };
    match delete(&app, id).await {
        Ok(true) => Redirect::to("/").into_response(),
        Ok(false) => html_error(StatusCode::NOT_FOUND, "There is no such note."),
        Err(m) => html_error(StatusCode::INTERNAL_SERVER_ERROR, &m),
    }
}

async fn note_page(State(app): State<Shared>, id: Result<Path<String>, PathRejection>) -> Response {
    let id = match parse_id(id) {
        Ok(id) => id,
        Err(m) => return html_error(StatusCode::BAD_REQUEST, &m),
    };
    let note = match on_store(&app, "reading the note", move |s| s.get(&id)).await {
        Ok(Some(n)) => n,
        Ok(None) => return html_error(StatusCode::NOT_FOUND, "There is no such note."),
        Err(m) => return html_error(StatusCode::INTERNAL_SERVER_ERROR, &m),
    };
    let render = Arc::clone(&app.render);
    let (user, timeout) = (app.config.render_user.clone(), app.config.render_timeout());
    let max = usize::try_from(app.config.render_max).unwrap_or(usize::MAX);
    let text = note.text.clone();
    let rendered = tokio::task::spawn_blocking(move || {
        render.call_with::<String, String>(RENDER.name(), &user, &text, timeout, max)
    })
    .await;
    match rendered {
        Ok(Ok(html)) => Html(pages::note(&note, &html)).into_response(),
        Ok(Err(e)) => {
            let (status, why) = render_failure(&e, &app.config);
            eprintln!("rendering note {}: {e}", note.id);
            (status, Html(pages::note_failed(&note, &why))).into_response()
        }
        Err(e) => html_error(StatusCode::INTERNAL_SERVER_ERROR, &internal("rendering", e)),
    }
}

/// What to tell the reader when a render fails.
fn render_failure(e: &ForkServerError, config: &Config) -> (StatusCode, String) {
    use privfork::ForkAsError;
    match e {
        ForkServerError::ForkAs(ForkAsError::Timeout { .. }) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "Rendering took longer than {} ms, so the renderer was stopped.",
                config.render_timeout_ms
            ),
        ),
        ForkServerError::ForkAs(ForkAsError::TooLarge { len, limit }) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "The rendered note would be {len} bytes, over the limit of {limit}; the renderer was stopped."
            ),
        ),
        ForkServerError::ForkAs(ForkAsError::Signaled { name, .. }) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "The renderer crashed on this note ({name}; SIGABRT is usually its memory \
                 limit of {} MiB), so rendering failed.",
                config.render_max_memory
            ),
        ),
        ForkServerError::ForkAs(ForkAsError::Panicked { .. }) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "The renderer failed on this note.".to_owned(),
        ),
        ForkServerError::Busy { .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            "Too many notes are being rendered right now; try again.".to_owned(),
        ),
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "The renderer is not available.".to_owned(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(h: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(header::HOST, HeaderValue::from_str(h).unwrap());
        m
    }

    #[test]
    fn only_ip_addresses_localhost_and_named_hosts_pass() {
        let named = ["notes.example.org".to_owned()];
        for ok in [
            "127.0.0.1:8080",
            "127.0.0.1",
            "[::1]:8080",
            "10.1.2.3:80",
            "localhost:8080",
            "LOCALHOST",
            "notes.example.org",
            "Notes.Example.Org:443",
        ] {
            assert!(check_host(&host(ok), &named).is_ok(), "{ok}");
        }
        for bad in [
            "evil.example:8080",
            "evil.example",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "notes.example.org.evil.example",
            "[::1",
        ] {
            assert!(check_host(&host(bad), &named).is_err(), "{bad}");
        }
        assert!(check_host(&HeaderMap::new(), &[]).is_ok());
    }

    #[test]
    fn same_origin_needs_origin_to_name_the_host() {
        let mut h = host("127.0.0.1:8080");
        assert!(check_same_origin(&h).is_ok());
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(check_same_origin(&h).is_ok());
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:9090"),
        );
        assert!(check_same_origin(&h).is_err());
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(check_same_origin(&h).is_err());
        h.remove(header::ORIGIN);
        h.insert("sec-fetch-site", HeaderValue::from_static("same-site"));
        assert!(check_same_origin(&h).is_err());
    }
}
