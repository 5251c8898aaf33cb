//! The HTTP side of `serve`: routes of KServe's V1 and V2 protocols, the try-it page, Prometheus
//! metrics, limits (body size, in-flight requests, slow clients), the scoring thread that
//! batches concurrent queries, and the drain on a stop signal.
//!
//! The server listens before the model is ready (liveness answers at once; readiness and
//! predictions say 503 until the embeddings are in memory). Requests are parsed and checked on
//! the HTTP threads; their queries go to one scoring thread, which takes every query waiting at
//! that moment (up to `max_batch`) and scores their shortlists in one pass.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::api::{self, ApiError, Limits};
use super::model::{Answer, Query, Scorer, ServedModel};
use crate::distributed::fault::StopSignal;
use crate::error::{Error, Result};

/// What the server allows and how long it waits.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub addr: SocketAddr,
    pub name: String,
    pub max_body_bytes: usize,
    pub max_in_flight: usize,
    pub max_batch: usize,
    /// A request's body must arrive within this time.
    pub body_timeout: Duration,
    /// A connection's request headers must arrive within this time.
    pub header_timeout: Duration,
    /// How long a stop waits for in-flight requests.
    pub drain_timeout: Duration,
    pub limits: Limits,
    pub http_threads: usize,
}

/// Upper bounds (seconds) of the latency histogram's buckets.
const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0,
];

#[derive(Default)]
struct Histogram {
    buckets: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
struct MetricsInner {
    requests: BTreeMap<(&'static str, u16), u64>,
    latency: BTreeMap<&'static str, Histogram>,
    batches: u64,
    batched_queries: u64,
}

struct Ready {
    model: Arc<ServedModel>,
    jobs: Mutex<mpsc::Sender<Job>>,
}

struct Job {
    queries: Vec<Query>,
    reply: tokio::sync::oneshot::Sender<Vec<Result<Answer>>>,
}

struct AppState {
    cfg: ServerConfig,
    ready: OnceLock<Ready>,
    in_flight: Arc<tokio::sync::Semaphore>,
    metrics: Arc<Mutex<MetricsInner>>,
    stopping: AtomicBool,
}

/// A running server: listening, ready once `set_ready` is called, done when `wait` returns.
pub struct Server {
    rt: tokio::runtime::Runtime,
    state: Arc<AppState>,
    accept: tokio::task::JoinHandle<()>,
    pub local_addr: SocketAddr,
}

impl Server {
    /// Binds the address and starts answering (not ready yet); a raised `stop` drains and ends
    /// the server.
    pub fn start(cfg: ServerConfig, stop: StopSignal) -> Result<Server> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cfg.http_threads.max(1))
            .thread_name("serve-http")
            .enable_all()
            .build()
            .map_err(|e| Error::Other(format!("cannot start the HTTP runtime: {e}")))?;
        let listener = std::net::TcpListener::bind(cfg.addr)
            .map_err(|e| Error::config("address", format!("cannot listen on {}: {e}", cfg.addr)))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::Other(format!("listener: {e}")))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| Error::Other(format!("listener: {e}")))?;
        let state = Arc::new(AppState {
            in_flight: Arc::new(tokio::sync::Semaphore::new(cfg.max_in_flight.max(1))),
            cfg,
            ready: OnceLock::new(),
            metrics: Arc::new(Mutex::new(MetricsInner::default())),
            stopping: AtomicBool::new(false),
        });
        let app = router(Arc::clone(&state));
        let st = Arc::clone(&state);
        let accept = rt.spawn(async move {
            let listener = match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => l,
                Err(e) => {
                    log::error!("listener: {e}");
                    return;
                }
            };
            accept_loop(listener, app, st, stop).await
        });
        Ok(Server {
            rt,
            state,
            accept,
            local_addr,
        })
    }

    /// Hands the model over: readiness turns true and predictions are answered.
    pub fn set_ready(&self, model: ServedModel) -> Result<()> {
        let model = Arc::new(model);
        let scorer = Scorer::new(&model.scoring)?;
        let (tx, rx) = mpsc::channel::<Job>();
        let m = Arc::clone(&model);
        let max_batch = self.state.cfg.max_batch.max(1);
        let metrics = Arc::clone(&self.state.metrics);
        std::thread::Builder::new()
            .name("serve-score".into())
            .spawn(move || score_loop(rx, &m, &scorer, max_batch, &metrics))
            .map_err(|e| Error::Other(format!("cannot start the scoring thread: {e}")))?;
        let _ = self.state.ready.set(Ready {
            model,
            jobs: Mutex::new(tx),
        });
        Ok(())
    }

    /// Blocks until the server has stopped (a stop signal, then the drain).
    pub fn wait(self) -> Result<()> {
        let Server { rt, accept, .. } = self;
        rt.block_on(accept)
            .map_err(|e| Error::Other(format!("HTTP server: {e}")))?;
        rt.shutdown_timeout(Duration::from_secs(1));
        Ok(())
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    app: Router,
    st: Arc<AppState>,
    stop: StopSignal,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(50));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let io = hyper_util::rt::TokioIo::new(stream);
                let svc = hyper_util::service::TowerToHyperService::new(app.clone());
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(st.cfg.header_timeout)
                    .serve_connection(io, svc);
                let watched = graceful.watch(conn);
                tokio::spawn(async move {
                    let _ = watched.await;
                });
            }
            _ = ticker.tick() => {
                if stop.raised() {
                    break;
                }
            }
        }
    }
    st.stopping.store(true, Ordering::SeqCst);
    drop(listener);
    log::info!(
        "stop signal: draining in-flight requests (at most {:?})",
        st.cfg.drain_timeout
    );
    match tokio::time::timeout(st.cfg.drain_timeout, graceful.shutdown()).await {
        Ok(()) => log::info!("drained; exiting"),
        Err(_) => log::warn!("drain timed out after {:?}; exiting", st.cfg.drain_timeout),
    }
}

fn score_loop(
    rx: mpsc::Receiver<Job>,
    model: &ServedModel,
    scorer: &Scorer,
    max_batch: usize,
    metrics: &Mutex<MetricsInner>,
) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        let mut queued = jobs[0].queries.len();
        while queued < max_batch {
            match rx.try_recv() {
                Ok(j) => {
                    queued += j.queries.len();
                    jobs.push(j);
                }
                Err(_) => break,
            }
        }
        let all: Vec<Query> = jobs
            .iter()
            .flat_map(|j| j.queries.iter().cloned())
            .collect();
        let mut answers = scorer.answer(model, &all).into_iter();
        if let Ok(mut m) = metrics.lock() {
            m.batches += 1;
            m.batched_queries += all.len() as u64;
        }
        for job in jobs {
            let mine: Vec<Result<Answer>> = answers.by_ref().take(job.queries.len()).collect();
            let _ = job.reply.send(mine);
        }
    }
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/metrics", get(metrics))
        .route("/v1/models", get(v1_models))
        .route("/v1/models/{name}", get(v1_model).post(v1_predict))
        .route("/v2", get(v2_server))
        .route("/v2/health/live", get(v2_live))
        .route("/v2/health/ready", get(v2_ready))
        .route("/v2/models/{name}", get(v2_model))
        .route("/v2/models/{name}/ready", get(v2_model_ready))
        .route("/v2/models/{name}/infer", axum::routing::post(v2_infer))
        .fallback(not_found)
        .with_state(state)
}

type Reply = std::result::Result<(StatusCode, Value), ApiError>;

/// Counts and times a request, and turns its outcome into a JSON response.
fn finish(st: &AppState, endpoint: &'static str, start: Instant, out: Reply) -> Response {
    let (status, body) = match out {
        Ok(ok) => ok,
        Err(e) => (
            StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST),
            e.body(),
        ),
    };
    let secs = start.elapsed().as_secs_f64();
    if let Ok(mut m) = st.metrics.lock() {
        *m.requests.entry((endpoint, status.as_u16())).or_default() += 1;
        let h = m.latency.entry(endpoint).or_default();
        h.count += 1;
        h.sum += secs;
        if let Some(i) = LATENCY_BUCKETS.iter().position(|&b| secs <= b) {
            h.buckets[i] += 1;
        }
    }
    (status, Json(body)).into_response()
}

fn ready_model(st: &AppState) -> std::result::Result<&Ready, ApiError> {
    st.ready
        .get()
        .ok_or_else(|| ApiError::new(503, "model: still loading, not ready"))
}

fn check_name(st: &AppState, name: &str) -> std::result::Result<(), ApiError> {
    if name == st.cfg.name {
        Ok(())
    } else {
        Err(ApiError::new(
            404,
            format!(
                "model: no model named '{name}' (this server has '{}')",
                st.cfg.name
            ),
        ))
    }
}

/// The request body as JSON, within the size limit and the body timeout.
async fn read_json(
    st: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> std::result::Result<Value, ApiError> {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ctype.to_ascii_lowercase().starts_with("application/json") {
        return Err(ApiError::new(
            415,
            format!("Content-Type: expected application/json, got '{ctype}'"),
        ));
    }
    let limit = st.cfg.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large(limit));
    }
    let bytes = match tokio::time::timeout(st.cfg.body_timeout, read_limited(body, limit)).await {
        Err(_) => {
            return Err(ApiError::new(
                408,
                format!("body: not received within {:?}", st.cfg.body_timeout),
            ))
        }
        Ok(read) => read?,
    };
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad(format!("body: malformed JSON: {e}")))
}

/// The body's bytes, refused as too large as soon as they pass `limit` (a body without a
/// declared length is counted as it arrives).
async fn read_limited(mut body: Body, limit: usize) -> std::result::Result<Vec<u8>, ApiError> {
    use http_body_util::BodyExt;
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::bad(format!("body: cannot be read: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if bytes.len() + data.len() > limit {
                return Err(too_large(limit));
            }
            bytes.extend_from_slice(&data);
        }
    }
    Ok(bytes)
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        413,
        format!("body: larger than the limit of {limit} bytes (--max-body-bytes)"),
    )
}

/// Parses, queues and awaits one request's queries under the in-flight bound.
async fn predict(
    st: &AppState,
    name: &str,
    headers: &HeaderMap,
    body: Body,
    parse: impl FnOnce(&ServedModel, &Value, &Limits) -> std::result::Result<Vec<Query>, ApiError>,
    respond: impl FnOnce(&[Answer], &[Query], &ServedModel, &Value) -> Value,
) -> Reply {
    check_name(st, name)?;
    let ready = ready_model(st)?;
    let _permit = st.in_flight.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            503,
            format!(
                "in-flight: {} requests are already being answered (--max-in-flight)",
                st.cfg.max_in_flight
            ),
        )
    })?;
    let body = read_json(st, headers, body).await?;
    let model = Arc::clone(&ready.model);
    let queries = parse(&model, &body, &st.cfg.limits)?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let sent = ready
        .jobs
        .lock()
        .map_err(|_| ApiError::new(500, "scoring thread: unavailable"))?
        .send(Job {
            queries: queries.clone(),
            reply: tx,
        });
    if sent.is_err() {
        return Err(ApiError::new(500, "scoring thread: unavailable"));
    }
    let answers = rx
        .await
        .map_err(|_| ApiError::new(500, "scoring thread: no answer"))?
        .into_iter()
        .collect::<Result<Vec<Answer>>>()
        .map_err(|e| ApiError::new(500, format!("scoring: {e}")))?;
    Ok((StatusCode::OK, respond(&answers, &queries, &model, &body)))
}

async fn v1_predict(
    State(st): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let start = Instant::now();
    let out = match name.strip_suffix(":predict") {
        None => Err(ApiError::new(
            404,
            format!(
                "path: POST /v1/models/{name} is not an endpoint (use /v1/models/<name>:predict)"
            ),
        )),
        Some(model) => {
            predict(&st, model, &headers, body, api::parse_v1, |a, q, m, _| {
                api::v1_response(a, q, m)
            })
            .await
        }
    };
    finish(&st, "v1_predict", start, out)
}

async fn v2_infer(
    State(st): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let start = Instant::now();
    let out = predict(&st, &name, &headers, body, api::parse_v2, |a, q, m, b| {
        api::v2_response(a, q, m, b.get("id"))
    })
    .await;
    finish(&st, "v2_infer", start, out)
}

async fn v1_models(State(st): State<Arc<AppState>>) -> Response {
    let start = Instant::now();
    let out = Ok((StatusCode::OK, json!({ "models": [st.cfg.name] })));
    finish(&st, "v1_models", start, out)
}

async fn v1_model(State(st): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    let start = Instant::now();
    let out = check_name(&st, &name).map(|_| {
        (
            StatusCode::OK,
            json!({ "name": st.cfg.name, "ready": st.ready.get().is_some() }),
        )
    });
    finish(&st, "v1_model", start, out)
}

async fn v2_server(State(st): State<Arc<AppState>>) -> Response {
    let start = Instant::now();
    let out = Ok((
        StatusCode::OK,
        json!({ "name": "shardsage", "version": env!("CARGO_PKG_VERSION"), "extensions": [] }),
    ));
    finish(&st, "v2_server", start, out)
}

async fn v2_live(State(st): State<Arc<AppState>>) -> Response {
    let start = Instant::now();
    finish(
        &st,
        "v2_live",
        start,
        Ok((StatusCode::OK, json!({ "live": true }))),
    )
}

fn readiness(st: &AppState) -> Reply {
    if st.ready.get().is_some() && !st.stopping.load(Ordering::SeqCst) {
        Ok((StatusCode::OK, json!({ "ready": true })))
    } else {
        Ok((StatusCode::SERVICE_UNAVAILABLE, json!({ "ready": false })))
    }
}

async fn v2_ready(State(st): State<Arc<AppState>>) -> Response {
    let start = Instant::now();
    let out = readiness(&st);
    finish(&st, "v2_ready", start, out)
}

async fn v2_model_ready(State(st): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    let start = Instant::now();
    let out = check_name(&st, &name).and_then(|_| readiness(&st));
    finish(&st, "v2_model_ready", start, out)
}

async fn v2_model(State(st): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    let start = Instant::now();
    let out = check_name(&st, &name)
        .and_then(|_| ready_model(&st))
        .map(|r| (StatusCode::OK, api::v2_metadata(&r.model)));
    finish(&st, "v2_model", start, out)
}

async fn not_found(State(st): State<Arc<AppState>>) -> Response {
    let start = Instant::now();
    let out = Err(ApiError::new(
        404,
        "path: not an endpoint (see /v1/models, /v2/health/ready, /metrics, /)",
    ));
    finish(&st, "other", start, out)
}

async fn page() -> Html<&'static str> {
    Html(include_str!("page.html"))
}

async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    let mut out = String::new();
    let loaded = st.ready.get().map_or(0, |r| r.model.num_nodes());
    let resident = st.ready.get().map_or(0, |r| r.model.resident_bytes());
    if let Ok(m) = st.metrics.lock() {
        out.push_str("# HELP shardsage_requests_total HTTP requests by endpoint and status.\n");
        out.push_str("# TYPE shardsage_requests_total counter\n");
        for ((ep, code), n) in &m.requests {
            out.push_str(&format!(
                "shardsage_requests_total{{endpoint=\"{ep}\",code=\"{code}\"}} {n}\n"
            ));
        }
        out.push_str(
            "# HELP shardsage_request_errors_total Requests answered with a 4xx or 5xx status.\n",
        );
        out.push_str("# TYPE shardsage_request_errors_total counter\n");
        let mut errors: BTreeMap<u16, u64> = BTreeMap::new();
        for ((_, code), n) in &m.requests {
            if *code >= 400 {
                *errors.entry(*code).or_default() += n;
            }
        }
        for (code, n) in errors {
            out.push_str(&format!(
                "shardsage_request_errors_total{{code=\"{code}\"}} {n}\n"
            ));
        }
        out.push_str("# HELP shardsage_request_duration_seconds Time from request to response.\n");
        out.push_str("# TYPE shardsage_request_duration_seconds histogram\n");
        for (ep, h) in &m.latency {
            let mut cumulative = 0;
            for (b, n) in LATENCY_BUCKETS.iter().zip(&h.buckets) {
                cumulative += n;
                out.push_str(&format!(
                    "shardsage_request_duration_seconds_bucket{{endpoint=\"{ep}\",le=\"{b}\"}} {cumulative}\n"
                ));
            }
            out.push_str(&format!(
                "shardsage_request_duration_seconds_bucket{{endpoint=\"{ep}\",le=\"+Inf\"}} {}\n",
                h.count
            ));
            out.push_str(&format!(
                "shardsage_request_duration_seconds_sum{{endpoint=\"{ep}\"}} {}\n",
                h.sum
            ));
            out.push_str(&format!(
                "shardsage_request_duration_seconds_count{{endpoint=\"{ep}\"}} {}\n",
                h.count
            ));
        }
        out.push_str(
            "# HELP shardsage_scoring_batches_total Batches of queries scored together.\n",
        );
        out.push_str("# TYPE shardsage_scoring_batches_total counter\n");
        out.push_str(&format!("shardsage_scoring_batches_total {}\n", m.batches));
        out.push_str("# HELP shardsage_scored_queries_total Queries scored.\n");
        out.push_str("# TYPE shardsage_scored_queries_total counter\n");
        out.push_str(&format!(
            "shardsage_scored_queries_total {}\n",
            m.batched_queries
        ));
    }
    out.push_str("# HELP shardsage_requests_in_flight Prediction requests being answered now.\n");
    out.push_str("# TYPE shardsage_requests_in_flight gauge\n");
    let busy = st.cfg.max_in_flight.max(1) - st.in_flight.available_permits();
    out.push_str(&format!("shardsage_requests_in_flight {busy}\n"));
    out.push_str("# HELP shardsage_embeddings_loaded Papers whose embeddings are in memory.\n");
    out.push_str("# TYPE shardsage_embeddings_loaded gauge\n");
    out.push_str(&format!("shardsage_embeddings_loaded {loaded}\n"));
    out.push_str("# HELP shardsage_resident_bytes Bytes of the served tables.\n");
    out.push_str("# TYPE shardsage_resident_bytes gauge\n");
    out.push_str(&format!("shardsage_resident_bytes {resident}\n"));
    out.push_str("# HELP shardsage_ready Whether predictions are answered.\n");
    out.push_str("# TYPE shardsage_ready gauge\n");
    out.push_str(&format!(
        "shardsage_ready {}\n",
        st.ready.get().is_some() as u8
    ));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
