//! Challengers over HTTP: `POST /v1/models/{name}/promote` (optionally
//! `{"challenger": "fast"}`) and `POST /v1/models/{name}/rollback`, carried
//! out by the model's loop on the partitions this instance owns
//! (`engine::commands`), and the challengers' standings in
//! `GET /v1/models/{name}`.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::json;

use super::{ApiError, AppState};
use crate::engine::commands::{Action, Command};
use crate::engine::ModelHandle;
use crate::live::Live;
use crate::pipeline::Refused;

/// How long a request waits for the model's loop to carry it out.
const ANSWER_WITHIN: Duration = Duration::from_secs(30);

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PromoteRequest {
    /// The challenger to promote (absent: the one that did best in its
    /// last window).
    #[serde(default)]
    challenger: Option<String>,
}

/// Makes a challenger the champion on every partition this instance owns.
pub(super) async fn promote(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let req: PromoteRequest = if body.iter().all(u8::is_ascii_whitespace) {
        PromoteRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError {
            status: StatusCode::BAD_REQUEST,
            message: format!(
                "the body should be empty or JSON such as {{\"challenger\": \"fast\"}}: {e}"
            ),
            field: Some("challenger".into()),
        })?
    };
    let h = state.model(&name)?;
    carry_out(h, Action::Promote(req.challenger)).await
}

/// Gives the champion's place back to the learner the last promotion took
/// it from, on every partition this instance owns.
pub(super) async fn rollback(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let h = state.model(&name)?;
    carry_out(h, Action::Rollback).await
}

async fn carry_out(h: &ModelHandle, action: Action) -> Result<Json<serde_json::Value>, ApiError> {
    let name = &h.config.name;
    if h.config.challenger.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "model {name} has no challengers; add `[[model.challenger]]` tables to its config"
            ),
        ));
    }
    let (reply, answer) = tokio::sync::oneshot::channel();
    h.commands.push(Command::Champion { action, reply });
    let outcomes = match tokio::time::timeout(ANSWER_WITHIN, answer).await {
        Ok(Ok(o)) => o,
        _ => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the loop of model {name} did not take the request within {} s (is it restarting its Kafka clients? see /readyz); try again", ANSWER_WITHIN.as_secs()),
            ))
        }
    };
    if outcomes.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("this instance owns no partition of model {name} yet; try again once /readyz answers 200"),
        ));
    }
    if let Some(e) = outcomes
        .iter()
        .map(|(_, r)| r.as_ref().err())
        .reduce(|a, b| a.and(b))
        .flatten()
    {
        // refused on every partition
        let status = match e {
            Refused::Unknown(..) => StatusCode::NOT_FOUND,
            Refused::NoChallengers | Refused::NothingToRollBack => StatusCode::CONFLICT,
        };
        let mut err = ApiError::new(status, e.to_string());
        if matches!(e, Refused::Unknown(..)) {
            err.field = Some("challenger".into());
        }
        return Err(err);
    }
    let partitions: Vec<serde_json::Value> = outcomes
        .into_iter()
        .map(|(p, r)| match r {
            Ok(promotion) => json!({ "partition": p, "promotion": promotion }),
            Err(e) => json!({ "partition": p, "error": e.to_string() }),
        })
        .collect();
    Ok(Json(json!({
        "model": name,
        "partitions": partitions,
        "note": "carried out on the partitions this instance owns; checkpointed with the next commit",
    })))
}

/// The challengers' part of `GET /v1/models/{name}`: per owned partition,
/// the champion, each challenger's comparison window and the promotions on
/// record (`null` without challengers).
pub(super) fn detail(h: &ModelHandle, live: &Live) -> serde_json::Value {
    if h.config.challenger.is_empty() {
        return serde_json::Value::Null;
    }
    let partitions: Vec<serde_json::Value> = live
        .partitions()
        .map(|(partition, m)| {
            json!({
                "partition": partition,
                "champion": m.champion(),
                "version": m.version(),
                "challengers": m.standings(),
                "promotions": m.promotions(),
                "promotions_total": m.promotions_total(),
            })
        })
        .collect();
    json!({
        "names": h.config.challenger.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        "promotion": h.config.promotion,
        "promotions": live.promotions(),
        "partitions": partitions,
    })
}
