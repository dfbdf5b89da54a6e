//! `POST /v1/models/{name}/predict`: scores readings with the model of the
//! partition that holds each reading's key, on whichever instance owns it.
//!
//! Per reading: a partition of this instance whose state knows the key
//! answers; else the key's partition (the producers' partitioner) answers
//! here if this instance owns it; else the reading is forwarded to the
//! owning instance found in the group's member list ([`crate::routing`]).
//! When no owner is known or it cannot be reached (it died and the group
//! has not reassigned its partitions yet), this instance answers with its
//! best model and says so (`"routing": "fallback"`). Every answer says
//! which instance and partition answered, the model version and how long
//! ago that model was last updated.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use serde_json::json;
use serde_json::value::RawValue;

use super::{ApiError, AppState};
use crate::engine::ModelHandle;
use crate::live::Live;
use crate::pipeline::{Pipeline, Prediction};
use crate::routing::Owner;

/// Marks a request forwarded by another instance: answered here, never
/// forwarded again.
pub const FORWARDED: &str = "x-streamfit-forwarded-by";

/// How long a forwarded request may take before this instance answers
/// itself.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);

/// Where one reading is answered.
enum Route {
    /// Here, by this partition's model (or the best local one: `None`).
    Local {
        partition: Option<i32>,
        how: &'static str,
    },
    /// By another instance.
    Remote(Owner),
}

/// Arrays longer than this are answered with the async worker handed over
/// to other tasks (`block_in_place`).
const BLOCKING_READINGS: usize = 64;

pub(super) async fn predict(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let h = state.model(&name)?.clone();
    let body = body.map_err(|e| {
        ApiError::new(
            e.status(),
            format!("request body not readable: {}", e.body_text()),
        )
    })?;
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.starts_with("application/json") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Type should be application/json, but is {ct:?}"),
        ));
    }
    let forwarded = headers.contains_key(FORWARDED);
    let trimmed = body
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .map_or(&body[..0], |i| &body[i..]);
    let many = trimmed.first() == Some(&b'[');
    let items: Vec<&RawValue> = if many {
        serde_json::from_slice(trimmed).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("body should be a JSON object or an array of objects: {e}"),
            )
        })?
    } else {
        Vec::new()
    };
    let readings: Vec<&[u8]> = if many {
        items.iter().map(|r| r.get().as_bytes()).collect()
    } else {
        vec![trimmed]
    };
    // a plain-text model's messages are bare texts: over HTTP, each
    // reading is its text (a JSON string or the text field of an object)
    let texts: Vec<Vec<u8>>;
    let readings = match h.config.plain_text_field() {
        Some(field) => {
            texts = readings
                .iter()
                .enumerate()
                .map(|(i, r)| plain_text(r, field, many.then_some(i)))
                .collect::<Result<_, _>>()?;
            texts.iter().map(Vec::as_slice).collect()
        }
        None => readings,
    };

    let live = h.live.load_full();
    let (routes, mut firsts): (Vec<Route>, Vec<Option<Prediction<'_>>>) = readings
        .iter()
        .enumerate()
        .map(|(i, bytes)| route(&state, &h, &live, bytes, forwarded, many.then_some(i)))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .map(|(r, p)| (r, Some(p)))
        .unzip();

    // forward each remote owner's readings as one array
    let mut remote: BTreeMap<String, (Owner, Vec<usize>)> = BTreeMap::new();
    for (i, r) in routes.iter().enumerate() {
        if let Route::Remote(owner) = r {
            remote
                .entry(owner.url.clone())
                .or_insert_with(|| (owner.clone(), Vec::new()))
                .1
                .push(i);
        }
    }
    let mut answers: Vec<Option<serde_json::Value>> = vec![None; readings.len()];
    for (url, (owner, idx)) in remote {
        let body = format!(
            "[{}]",
            idx.iter()
                .map(|&i| String::from_utf8_lossy(readings[i]))
                .collect::<Vec<_>>()
                .join(",")
        );
        match forward(&state, &headers, &url, &name, body).await {
            Ok(preds) if preds.len() == idx.len() => {
                for (&i, mut p) in idx.iter().zip(preds) {
                    // the owner may have just handed the partition on: then
                    // its answer is a fallback, and says so
                    if p["routing"] == "owner" {
                        p["routing"] = json!("forwarded");
                    }
                    answers[i] = Some(p);
                }
            }
            Ok(preds) => {
                tracing::debug!(model = %name, instance = %owner.instance, got = preds.len(), want = idx.len(), "owner answered a different number of readings; answering here");
            }
            Err(e) => {
                tracing::debug!(model = %name, instance = %owner.instance, error = %e, "owner not reachable; answering here");
            }
        }
    }
    let mut answer_all = || -> Result<Vec<serde_json::Value>, ApiError> {
        let mut out = Vec::with_capacity(readings.len());
        for (i, (bytes, r)) in readings.iter().zip(&routes).enumerate() {
            if let Some(a) = answers[i].take() {
                out.push(a);
                continue;
            }
            let (partition, how) = match r {
                Route::Local { partition, how } => (*partition, *how),
                Route::Remote(_) => (None, "fallback"),
            };
            let answer = Answer {
                partition,
                how,
                first: firsts[i].take(),
            };
            out.push(local(&state, &h, &live, bytes, answer, many.then_some(i))?);
        }
        Ok(out)
    };
    // a large array is CPU work for milliseconds: off the async workers'
    // queue, so that other requests are not held behind it
    let blocking = readings.len() > BLOCKING_READINGS
        && tokio::runtime::Handle::current().runtime_flavor()
            == tokio::runtime::RuntimeFlavor::MultiThread;
    let mut out = if blocking {
        tokio::task::block_in_place(answer_all)?
    } else {
        answer_all()?
    };
    let mut answer = if many {
        json!({ "predictions": out })
    } else {
        out.pop().unwrap_or_default()
    };
    answer["model"] = json!(h.config.name);
    if answer.get("model_version").is_none() {
        answer["model_version"] = json!(live.version());
    }
    Ok(Json(answer))
}

/// Decides where one reading is answered; also gives the prediction of the
/// busiest partition's model, which decoded the reading to find its key
/// (reused when that partition answers).
fn route<'a>(
    state: &AppState,
    h: &ModelHandle,
    live: &'a Live,
    bytes: &'a [u8],
    forwarded: bool,
    index: Option<usize>,
) -> Result<(Route, Prediction<'a>), ApiError> {
    let (_, primary) = live.primary();
    let reading = primary
        .predict_one(bytes, None)
        .map_err(|e| bad(e, index))?;
    let route = decide(state, h, live, reading.key.as_deref(), forwarded);
    Ok((route, reading))
}

/// Where a reading with `key` is answered.
fn decide(
    state: &AppState,
    h: &ModelHandle,
    live: &Live,
    key: Option<&str>,
    forwarded: bool,
) -> Route {
    let Some(key) = key else {
        return Route::Local {
            partition: None,
            how: "local",
        };
    };
    if let Some(p) = live.holder(key) {
        return Route::Local {
            partition: Some(p),
            how: "owner",
        };
    }
    let dir = h.directory.load();
    if dir.partitions <= 0 {
        return Route::Local {
            partition: None,
            how: "fallback",
        };
    }
    let p = state.partitioner.partition(key.as_bytes(), dir.partitions);
    if live.partition(p).is_some() {
        return Route::Local {
            partition: Some(p),
            how: "owner",
        };
    }
    match dir.owners.get(&p) {
        Some(owner) if !forwarded && owner.instance != state.instance => {
            Route::Remote(owner.clone())
        }
        _ => Route::Local {
            partition: None,
            how: "fallback",
        },
    }
}

/// How one reading is answered here.
struct Answer<'a> {
    /// The partition whose model answers (`None`: the busiest).
    partition: Option<i32>,
    /// `owner`, `local` or `fallback`.
    how: &'static str,
    /// The busiest partition's prediction, made while routing.
    first: Option<Prediction<'a>>,
}

/// Answers one reading with a local model.
fn local(
    state: &AppState,
    h: &ModelHandle,
    live: &Live,
    bytes: &[u8],
    answer: Answer<'_>,
    index: Option<usize>,
) -> Result<serde_json::Value, ApiError> {
    let Answer {
        partition,
        how,
        first,
    } = answer;
    let busiest = live.primary().0;
    let (partition, p): (Option<i32>, &Pipeline) =
        match partition.and_then(|q| live.partition(q).map(|m| (q, m))) {
            Some((q, m)) => (Some(q), m),
            None => live.primary(),
        };
    let r = match first {
        // the busiest partition answers: its prediction is made already
        Some(first) if partition == busiest => first,
        _ => p.predict_one(bytes, None).map_err(|e| bad(e, index))?,
    };
    let mut v = json!(crate::render::render(p.task(), p.classes(), &r));
    v["key"] = json!(r.key);
    if let Some(m) = v.as_object_mut() {
        // an ad-hoc reading's label is not scored: only the model's answer
        m.remove("label");
    }
    v["partition"] = json!(partition);
    v["partition_version"] = json!(p.version());
    v["instance"] = json!(state.instance);
    v["routing"] = json!(how);
    v["model_version"] = json!(live.version());
    v["staleness_ms"] = json!(partition.and_then(|q| live.age_ms(q)));
    v["lag"] = json!(h.lag());
    if let Some(b) = basis(&h.config, &r) {
        v["basis"] = b;
    }
    Ok(v)
}

/// What a regression with a baseline rests on ([`crate::render::Basis`]),
/// with the baselines in order of preference.
fn basis(config: &crate::config::ModelConfig, r: &Prediction<'_>) -> Option<serde_json::Value> {
    let names = config.baseline_names();
    let mut b = serde_json::to_value(crate::render::basis(names, r)?).ok()?;
    b["preference"] = json!(names);
    Some(b)
}

fn bad(e: features::FeatureError, index: Option<usize>) -> ApiError {
    ApiError {
        status: StatusCode::BAD_REQUEST,
        message: match index {
            Some(i) => format!("reading {i}: {e}"),
            None => e.to_string(),
        },
        field: e.field().map(str::to_owned),
    }
}

/// The text of one reading of a `format = "text"` model, whose messages
/// are bare texts: the reading is a JSON string, or an object with the
/// text in `field` (what its JSON twin would read).
fn plain_text(raw: &[u8], field: &str, index: Option<usize>) -> Result<Vec<u8>, ApiError> {
    use serde_json::Value;
    let value: Value = serde_json::from_slice(raw).map_err(|e| {
        let at = index.map_or_else(String::new, |i| format!("reading {i}: "));
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("{at}a reading of a plain-text model should be its text as a JSON string, or an object with the text in `{field}`, not invalid JSON ({e})"),
        )
    })?;
    let actual = match &value {
        Value::String(s) => return Ok(s.as_bytes().to_vec()),
        Value::Object(m) => match m.get(field) {
            Some(Value::String(s)) => return Ok(s.as_bytes().to_vec()),
            None => {
                let field = field.to_owned();
                return Err(bad(features::FeatureError::Missing { field }, index));
            }
            other => other,
        },
        other => Some(other),
    };
    let e = features::FeatureError::Field {
        field: field.to_owned(),
        expected: "the text, a string (the reading: a JSON string, or an object with the text in this field)",
        actual: crate::pipeline::describe_json(actual),
    };
    Err(bad(e, index))
}

/// Sends readings to the owning instance; its per-reading answers.
async fn forward(
    state: &AppState,
    headers: &HeaderMap,
    url: &str,
    model: &str,
    body: String,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut req = state
        .client
        .post(format!("{url}/v1/models/{model}/predict"))
        .header(header::CONTENT_TYPE.as_str(), "application/json")
        .header(FORWARDED, state.instance.as_str())
        .timeout(FORWARD_TIMEOUT)
        .body(body);
    if let Some(auth) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        req = req.header(header::AUTHORIZATION.as_str(), auth);
    }
    let res = req.send().await?;
    if !res.status().is_success() {
        anyhow::bail!("owner answered {}", res.status());
    }
    let mut v: serde_json::Value = res.json().await?;
    match v["predictions"].take() {
        serde_json::Value::Array(a) => Ok(a),
        _ => anyhow::bail!("owner's answer has no predictions array"),
    }
}
