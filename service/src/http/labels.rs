//! `POST /v1/models/{name}/labels`: labels for HTTP users, a label message
//! (`{"id": ..., "<target>": ...}`) or an array of them, joined with the
//! readings waiting for them in the partitions this instance owns
//! (`engine::commands`), and kept from the next commit on.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::{ApiError, AppState};
use crate::engine::commands::Command;

/// How long a request waits for the model's loop to take its labels.
const ANSWER_WITHIN: Duration = Duration::from_secs(30);

/// Joins labels with their readings.
pub(super) async fn labels(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let h = state.model(&name)?;
    let m = &h.config;
    let Some(topic) = &m.labels_topic else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("model {name} takes its labels with its readings: it has no `labels_topic`"),
        ));
    };
    let example = format!(
        "{{\"{}\": \"r1\", \"{}\": ...}}",
        m.label_id.as_deref().unwrap_or("id"),
        m.target.field
    );
    let parsed: Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("the body should be a label such as {example}, or an array of them: {e}"),
        )
    })?;
    let (many, items) = match parsed {
        Value::Array(a) => (true, a),
        other => (false, vec![other]),
    };
    if items.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "the array of labels is empty",
        ));
    }
    let labels: Vec<Vec<u8>> = items.iter().map(|v| v.to_string().into_bytes()).collect();
    let (reply, answer) = tokio::sync::oneshot::channel();
    h.commands.push(Command::Labels { labels, reply });
    let answers = match tokio::time::timeout(ANSWER_WITHIN, answer).await {
        Ok(Ok(a)) => a,
        _ => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the loop of model {name} did not take the labels within {} s (see /readyz); try again", ANSWER_WITHIN.as_secs()),
            ))
        }
    };
    if !many {
        if let Some(Err(e)) = answers.first() {
            let status = if e.starts_with("no reading") {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::BAD_REQUEST
            };
            return Err(ApiError::new(status, e.clone()));
        }
    }
    let joined = answers.iter().filter(|a| a.is_ok()).count();
    let results: Vec<Value> = answers
        .into_iter()
        .map(|a| match a {
            Ok(p) => json!({ "joined": true, "partition": p }),
            Err(e) => json!({ "joined": false, "error": e }),
        })
        .collect();
    Ok(Json(json!({
        "model": name,
        "joined": joined,
        "labels": results,
        "note": format!("kept from the next commit on; a label that must survive a crash in between belongs on the labels topic {topic}"),
    })))
}
