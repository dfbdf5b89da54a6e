//! The HTTP API (axum): ad-hoc scoring against the live models, model
//! inspection, health, readiness and Prometheus metrics. Handlers read the
//! live pipeline through an `ArcSwap` load and never wait on a worker.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::json;

use crate::engine::ModelHandle;
use crate::live::Live;
use crate::pipeline::Pipeline;
use crate::stats::{render, Exposed};

mod auth;
mod contest;
mod dashboard;
mod history;
mod labels;
mod limits;
mod predict;
pub mod serve;

pub use auth::Tokens;
pub use limits::Guard;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// One handle per configured model.
    pub models: Arc<Vec<Arc<ModelHandle>>>,
    /// This instance's name (`service.instance_id` or its default).
    pub instance: String,
    /// How producers spread keys over partitions.
    pub partitioner: crate::routing::KeyPartitioner,
    /// Forwards `/predict` to the instance that owns a key's partition.
    pub client: reqwest::Client,
    /// True when requests need a token (the dashboard asks for one first).
    pub tokens_required: bool,
}

impl AppState {
    /// The state for `models` of the instance `service` describes.
    pub fn new(models: Vec<Arc<ModelHandle>>, service: &crate::config::ServiceConfig) -> Self {
        AppState {
            models: Arc::new(models),
            instance: service.instance(),
            partitioner: service.key_partitioner,
            client: reqwest::Client::new(),
            tokens_required: false,
        }
    }

    /// Forwards to other instances trusting `ca` (their HTTPS certificates'
    /// CA, `http.peer_ca`).
    pub fn with_peer_ca(mut self, ca: reqwest::Certificate) -> anyhow::Result<Self> {
        self.client = reqwest::Client::builder()
            .add_root_certificate(ca)
            .build()
            .map_err(|e| anyhow::anyhow!("cannot build the forwarding HTTP client: {e}"))?;
        Ok(self)
    }

    fn model(&self, name: &str) -> Result<&Arc<ModelHandle>, ApiError> {
        self.models
            .iter()
            .find(|m| m.config.name == name)
            .ok_or_else(|| {
                let names: Vec<&str> = self.models.iter().map(|m| m.config.name.as_str()).collect();
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!(
                        "no model named {name:?}; the models are: {}",
                        names.join(", ")
                    ),
                )
            })
    }
}

/// An error answer: JSON with a message that says what to fix.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    field: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            field: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.message });
        if let Some(f) = self.field {
            body["field"] = json!(f);
        }
        (self.status, Json(body)).into_response()
    }
}

/// The router; `max_body` bounds request bodies.
pub fn app(state: AppState, max_body: usize) -> Router {
    Router::new()
        .route("/v1/models", get(list_models))
        .route("/v1/models/{name}", get(get_model))
        .route("/v1/models/{name}/predict", post(predict::predict))
        .route("/v1/models/{name}/backfill", post(backfill))
        .route("/v1/models/{name}/promote", post(contest::promote))
        .route("/v1/models/{name}/rollback", post(contest::rollback))
        .route("/v1/models/{name}/labels", post(labels::labels))
        .route("/v1/models/{name}/snapshot", get(snapshot))
        .route("/v1/models/{name}/history", get(history::history))
        .route("/", get(dashboard::page))
        .route("/dashboard.js", get(dashboard::script))
        .route("/dashboard.css", get(dashboard::style))
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "ok" })) }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no such endpoint; see the HTTP API in the README",
            )
        })
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// The router behind tokens (`auth`) and the request bounds (`limits`),
/// the bounds outermost: an overloaded instance answers 503 before
/// anything else, and every error is JSON.
pub fn secured(router: Router, tokens: Arc<Tokens>, guard: Arc<Guard>) -> Router {
    router
        .layer(axum::middleware::from_fn_with_state(tokens, auth::check))
        .layer(axum::middleware::from_fn_with_state(guard, limits::guard))
}

/// The OpenAPI document of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

#[derive(Serialize)]
struct ModelSummary<'a> {
    name: &'a str,
    task: models::Task,
    version: u64,
    readings_seen: u64,
    readings_learned: u64,
    ready: bool,
}

fn summary<'a>(h: &'a ModelHandle, live: &Live) -> ModelSummary<'a> {
    ModelSummary {
        name: &h.config.name,
        task: live.primary().1.task(),
        version: live.version(),
        readings_seen: live.seen(),
        readings_learned: live.learned(),
        ready: h.ready(),
    }
}

async fn list_models(State(state): State<AppState>) -> Json<serde_json::Value> {
    let list: Vec<serde_json::Value> = state
        .models
        .iter()
        .map(|h| json!(summary(h, &h.live.load())))
        .collect();
    Json(json!({ "models": list }))
}

/// The weights of the dense columns by name and the intercept: of the
/// shared model, or of each class (multiclass); a sparse model also says
/// how many hashed columns have a weight.
fn weights_of(p: &Pipeline) -> serde_json::Value {
    let names = p.extractor().resolved_names();
    let named = |w: &mut dyn Iterator<Item = f64>| -> serde_json::Map<String, serde_json::Value> {
        names
            .iter()
            .zip(w)
            .map(|(n, w)| (n.clone(), json!(w)))
            .collect()
    };
    match p.model() {
        models::Learner::Dense(m) => {
            let shared = m.shared();
            json!({ "weights": named(&mut shared.weights().iter().copied()), "intercept": shared.intercept() })
        }
        models::Learner::Sparse(m) if m.is_multiclass() => {
            let (mut weights, mut intercept) = (serde_json::Map::new(), serde_json::Map::new());
            for (k, class) in p.classes().iter().enumerate() {
                if let Some((w, b)) = m.dense_weights(k) {
                    weights.insert(class.clone(), json!(named(&mut w.into_iter())));
                    intercept.insert(class.clone(), json!(b));
                }
            }
            json!({ "weights": weights, "intercept": intercept, "sparse_weights": m.sparse_columns() })
        }
        models::Learner::Sparse(m) => {
            let (w, b) = m.dense_weights(0).unwrap_or_default();
            json!({ "weights": named(&mut w.into_iter()), "intercept": b, "sparse_weights": m.sparse_columns() })
        }
    }
}

async fn get_model(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let h = state.model(&name)?;
    let live = h.live.load();
    let (primary, p) = live.primary();
    let (cumulative, rolling) = live.metrics();
    let partitions: Vec<serde_json::Value> = live
        .partitions()
        .map(|(partition, m)| {
            let (c, r) = live.metrics_of(m);
            json!({
                "partition": partition,
                "version": m.version(),
                "readings_seen": live.seen_of(partition),
                "readings_learned": m.learned(),
                "metrics": { "cumulative": c, "rolling": r },
                "per_key_models": m.model().key_count(),
                "per_key_models_first": m.model().dense().map(|d| d.per_key().take(KEYS_LISTED).map(|(k, _)| k).collect::<Vec<_>>()).unwrap_or_default(),
                "keys": m.key_count(),
            })
        })
        .collect();
    let mut shared = weights_of(p);
    shared["partition"] = json!(primary);
    Ok(Json(json!({
        "model": summary(h, &live),
        "input_topic": h.config.input_topic,
        "output_topic": h.config.output_topic(),
        "not_ready": h.not_ready(),
        "metrics": { "cumulative": cumulative, "rolling": rolling },
        "weights": shared["weights"],
        "intercept": shared["intercept"],
        "sparse_weights": shared.get("sparse_weights"),
        "classes": (p.task() == models::Task::Multiclass).then(|| live.classes()),
        "weights_partition": primary,
        "weights_note": "weights of the shared model of the partition that has seen the most readings, on standardised features (and target, for regression); model state belongs to an input partition",
        "partitions": partitions,
        "learn_errors": live.learn_errors(),
        "drift": h.config.drift.map(|params| json!({
            "detector": params,
            "count": live.drifts(),
            "events": live.partitions().flat_map(|(partition, m)| {
                m.drift().into_iter().flat_map(move |d| d.events.iter().map(move |e| json!({
                    "partition": partition,
                    "at": e.at,
                    "event_time_ms": e.event_time,
                    "mean_loss": e.mean_loss,
                })))
            }).collect::<Vec<_>>(),
        })),
        "challengers": contest::detail(h, &live),
        "labels": labels_detail(h, &live),
        "events_topic": h.config.events_topic(),
        "backfill": h.backfill.lock().ok().and_then(|s| s.status.clone()),
        "commits": h.stats.commits.load(Ordering::Relaxed),
        "aborts": h.stats.aborts.load(Ordering::Relaxed),
    })))
}

/// The delayed labels' part of `GET /v1/models/{name}` (`null` without a
/// `labels_topic`): readings waiting, labels joined, readings dropped
/// unlabelled, labels dropped without a reading; in all and per partition.
fn labels_detail(h: &ModelHandle, live: &Live) -> serde_json::Value {
    let Some(topic) = &h.config.labels_topic else {
        return serde_json::Value::Null;
    };
    let mut all = [0u64; 4];
    let partitions: Vec<serde_json::Value> = live
        .partitions()
        .filter_map(|(partition, m)| {
            let (joined, expired, unmatched) = m.label_counts()?;
            // counted after every batch, even one that learned nothing
            let waiting = live.labels_waiting_of(partition).unwrap_or(0) as u64;
            for (a, x) in all.iter_mut().zip([waiting, joined, expired, unmatched]) {
                *a += x;
            }
            Some(json!({ "partition": partition, "waiting": waiting, "joined": joined, "expired": expired, "unmatched": unmatched }))
        })
        .collect();
    json!({
        "topic": topic,
        "label_id": h.config.label_id.as_deref().unwrap_or("id"),
        "window": h.config.label_window_text(),
        "waiting": all[0],
        "joined": all[1],
        "expired": all[2],
        "unmatched": all[3],
        "partitions": partitions,
    })
}

/// How many per-key model names `GET /v1/models/{name}` lists per partition.
const KEYS_LISTED: usize = 100;

/// The live model in the versioned snapshot format: each partition's
/// pipeline with the offset it is valid at (`streamfit model import` reads it).
async fn snapshot(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let h = state.model(&name)?.clone();
    // every key's state, serialised: off the async workers
    tokio::task::spawn_blocking(move || snapshot_of(&h, name))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the snapshot task failed: {e}"),
            )
        })?
}

fn snapshot_of(h: &ModelHandle, name: String) -> Result<Response, ApiError> {
    let live = h.live.load();
    let topic = h.config.input_topic().unwrap_or_default().to_owned();
    let group = h.group.get().cloned().unwrap_or_default();
    let partitions: Vec<crate::checkpoint::Checkpoint> = live
        .partitions()
        .filter(|(p, _)| live.next_offset(*p) >= 0)
        .map(|(p, m)| crate::checkpoint::Checkpoint {
            format_version: crate::checkpoint::FORMAT_VERSION,
            model: name.clone(),
            group: group.clone(),
            topic: topic.clone(),
            partition: p,
            next_offset: live.next_offset(p),
            // the live copies keep no readings waiting for labels
            labels_next_offset: None,
            pipeline: m.snapshot(),
            epoch: 0,
            keys: m.key_count() as u64,
            pages: 0,
        })
        .collect();
    if partitions.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("model {name} holds no partition's state yet; try again once /readyz answers 200 and readings have arrived"),
        ));
    }
    let snap = crate::snapshot::ModelSnapshot {
        format_version: crate::checkpoint::FORMAT_VERSION,
        model: name,
        group,
        topic,
        partitions,
    };
    let body = serde_json::to_vec(&snap).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the snapshot: {e}"),
        )
    })?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BackfillRequest {
    from: String,
    /// Swap the backfilled model in even when it knows fewer readings than
    /// the live one.
    #[serde(default)]
    force: bool,
}

/// Starts a live backfill: a shadow model learns the input topic from
/// `from` and replaces the live model once it has caught up.
async fn backfill(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Result<Json<BackfillRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let h = state.model(&name)?;
    let Json(req) = body.map_err(|e| {
        ApiError::new(
            e.status(),
            format!(
                "the body should be JSON such as {{\"from\": \"earliest\"}} (or an ISO 8601 time, or \"PARTITION:OFFSET,...\"): {}",
                e.body_text()
            ),
        )
    })?;
    if h.config.labels_topic.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "model {name} learns from a `labels_topic`: a backfill cannot join its labels yet"
            ),
        ));
    }
    let from = crate::engine::offsets::parse_from_as(&req.from, "from").map_err(|e| ApiError {
        status: StatusCode::BAD_REQUEST,
        message: format!("{e:#}"),
        field: Some("from".into()),
    })?;
    if matches!(from, crate::engine::offsets::From::Latest) {
        return Err(ApiError {
            status: StatusCode::BAD_REQUEST,
            message: "a backfill from \"latest\" would learn nothing and replace the live model with an empty one; `from` should be \"earliest\", an ISO 8601 time or \"PARTITION:OFFSET,...\"".into(),
            field: Some("from".into()),
        });
    }
    let mut slot = h.backfill.lock().map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the backfill status lock is poisoned; restart the service",
        )
    })?;
    if slot.status.as_ref().is_some_and(|s| s.active()) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("a backfill of {name} is already running; follow it in GET /v1/models/{name} (field backfill)"),
        ));
    }
    let status = crate::engine::backfill::Status::requested(&req.from);
    slot.request = Some(from);
    slot.force = req.force;
    slot.status = Some(status.clone());
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "backfill": status, "progress": format!("/v1/models/{name}") })),
    ))
}

async fn readyz(State(state): State<AppState>) -> Response {
    let not_ready: serde_json::Map<String, serde_json::Value> = state
        .models
        .iter()
        .filter_map(|m| m.not_ready().map(|why| (m.config.name.clone(), json!(why))))
        .collect();
    if not_ready.is_empty() {
        Json(json!({ "ready": true })).into_response()
    } else {
        let first = not_ready.values().next().cloned().unwrap_or_default();
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "ready": false, "waiting_for": not_ready, "error": first })),
        )
            .into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let pipelines: Vec<_> = state.models.iter().map(|m| m.live.load_full()).collect();
    let exposed: Vec<Exposed<'_>> = state
        .models
        .iter()
        .zip(&pipelines)
        .map(|(m, p)| Exposed {
            name: &m.config.name,
            stats: &m.stats,
            lag: m.lag(),
            version: p.version(),
            drifts: p.drifts(),
            promotions: (!m.config.challenger.is_empty()).then(|| p.promotions()),
        })
        .collect();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        render(&exposed),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    fn state() -> AppState {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/streamfit.toml");
        let config = Config::load(&path).expect("valid config");
        let models = config
            .models
            .into_iter()
            .map(|m| Arc::new(ModelHandle::new(m).expect("builds")))
            .collect();
        AppState::new(models, &config.service)
    }

    async fn call(
        app: Router,
        method: &str,
        uri: &str,
        ct: &str,
        body: &str,
    ) -> (StatusCode, serde_json::Value) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::CONTENT_TYPE, ct)
            .body(Body::from(body.to_owned()))
            .expect("request");
        let res = app.oneshot(req).await.expect("answers");
        let status = res.status();
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .expect("body");
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }

    #[tokio::test]
    async fn predicts_one_or_many() {
        let app = app(state(), 1024);
        let reading = r#"{"ride":"soarin","ts":"2018-01-01T09:05:00","posted_wait":25.0}"#;
        let (s, v) = call(
            app.clone(),
            "POST",
            "/v1/models/waits-v1/predict",
            "application/json",
            reading,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["model_version"], 0);
        assert_eq!(v["prediction"], 0.0);
        let (s, v) = call(app, "POST", "/v1/models/heart/predict", "application/json", &format!("[{0},{0}]", r#"{"patient_id":"p","age":58,"sex":"M","chest_pain_type":"ASY","resting_bp":100,"cholesterol":234,"fasting_bs":0,"resting_ecg":"Normal","max_hr":156,"exercise_angina":"N","oldpeak":0.1,"st_slope":"Up"}"#)).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["predictions"][1]["probability"], 0.5);
    }

    #[tokio::test]
    async fn backfill_requests_are_checked_and_never_doubled() {
        let st = state();
        let url = "/v1/models/waits/backfill";
        let ct = "application/json";
        let (s, v) = call(
            app(st.clone(), 1 << 20),
            "POST",
            url,
            ct,
            r#"{"from": "yesterday"}"#,
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        assert_eq!(v["field"], "from", "{v}");
        let (s, v) = call(
            app(st.clone(), 1 << 20),
            "POST",
            url,
            ct,
            r#"{"start": "earliest"}"#,
        )
        .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        assert!(v["error"].as_str().unwrap_or("").contains("from"), "{v}");
        let (s, v) = call(
            app(st.clone(), 1 << 20),
            "POST",
            "/v1/models/nope/backfill",
            ct,
            r#"{"from": "earliest"}"#,
        )
        .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
        let (s, v) = call(
            app(st.clone(), 1 << 20),
            "POST",
            url,
            ct,
            r#"{"from": "2018-06-01T00:00:00Z"}"#,
        )
        .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        assert_eq!(v["backfill"]["state"], "requested", "{v}");
        // one at a time: the first has not finished
        let (s, v) = call(
            app(st.clone(), 1 << 20),
            "POST",
            url,
            ct,
            r#"{"from": "earliest"}"#,
        )
        .await;
        assert_eq!(s, StatusCode::CONFLICT, "{v}");
        let (s, v) = call(app(st.clone(), 1 << 20), "GET", "/v1/models/waits", ct, "").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v["backfill"]["from"], "2018-06-01T00:00:00Z", "{v}");
        // the request waits for the model's thread
        let h = st.model("waits").expect("model");
        assert!(matches!(
            h.backfill.lock().expect("lock").request,
            Some(crate::engine::offsets::From::Time(_))
        ));
    }

    #[tokio::test]
    async fn bad_requests_get_json_4xx() {
        let app = app(state(), 1024);
        let cases = [
            (
                "/v1/models/nope/predict",
                "application/json",
                "{}",
                StatusCode::NOT_FOUND,
                "no model named",
            ),
            (
                "/v1/models/waits/predict",
                "text/plain",
                "{}",
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Content-Type",
            ),
            (
                "/v1/models/waits/predict",
                "application/json",
                "{\"ride\":1",
                StatusCode::BAD_REQUEST,
                "JSON object",
            ),
            (
                "/v1/models/waits/predict",
                "application/json",
                r#"{"ride":"a","ts":"yesterday"}"#,
                StatusCode::BAD_REQUEST,
                "`ts` should be",
            ),
            (
                "/v1/models/waits/predict",
                "application/json",
                &"x".repeat(2000),
                StatusCode::PAYLOAD_TOO_LARGE,
                "body",
            ),
        ];
        for (uri, ct, body, status, needle) in cases {
            let (s, v) = call(app.clone(), "POST", uri, ct, body).await;
            assert_eq!(s, status, "{uri} {v}");
            assert!(
                v["error"].as_str().unwrap_or("").contains(needle),
                "{v} should mention {needle}"
            );
        }
        let (s, v) = call(app.clone(), "GET", "/readyz", "", "").await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
        let (s, v) = call(app, "GET", "/v1/models/heart", "", "").await;
        assert_eq!(s, StatusCode::OK);
        assert!(v["weights"]["age"].is_number(), "{v}");
    }
}
