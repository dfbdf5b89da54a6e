//! `GET /v1/models/{name}/history`: what the dashboard draws for a model:
//! samples over time (counters, readings/s, lag, rolling metrics), recent
//! predictions beside their labels, per-partition state and the backfill.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::json;

use super::{summary, ApiError, AppState};
use crate::history::SAMPLES;

/// `?since=T`: only the samples taken after T (ms since the Unix epoch).
fn since(query: Option<&str>) -> Result<u64, ApiError> {
    let Some(q) = query else {
        return Ok(0);
    };
    for pair in q.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == "since" {
            return v.parse::<u64>().map_err(|_| ApiError {
                status: StatusCode::BAD_REQUEST,
                message: format!(
                    "`since` should be a time in ms since the Unix epoch (a whole number), not {v:?}"
                ),
                field: Some("since".into()),
            });
        }
    }
    Ok(0)
}

pub(super) async fn history(
    State(state): State<AppState>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<serde_json::Value>, ApiError> {
    let since = since(query.as_deref())?;
    let h = state.model(&name)?;
    let live = h.live.load();
    let lags = h.partition_lags();
    let partitions: Vec<serde_json::Value> = live
        .partitions()
        .map(|(p, m)| {
            let l = lags.get(&p);
            json!({
                "partition": p,
                "next_offset": l.map_or(-1, |l| l.next),
                "high_watermark": l.map_or(-1, |l| l.end),
                "lag": l.map_or(-1, |l| l.lag),
                "readings_seen": live.seen_of(p),
                "readings_learned": m.learned(),
                "version": m.version(),
                "updated_ms_ago": live.age_ms(p),
            })
        })
        .collect();
    let samples = h.history.samples_since(since);
    let classes = (live.primary().1.task() == models::Task::Multiclass).then(|| live.classes());
    Ok(Json(json!({
        "classes": classes,
        "model": summary(h, &live),
        "instance": state.instance,
        "not_ready": h.not_ready(),
        "input_topic": h.config.input_topic,
        "output_topic": h.config.output_topic(),
        "interval_ms": 1000,
        "kept": SAMPLES,
        "now_ms": crate::live::now_ms(),
        "samples": samples,
        "recent": h.history.recent(),
        "partitions": partitions,
        "backfill": h.backfill.lock().ok().and_then(|s| s.status.clone()),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_is_a_whole_number_or_absent() {
        assert_eq!(since(None).expect("none"), 0);
        assert_eq!(since(Some("since=17")).expect("17"), 17);
        assert_eq!(since(Some("x=1&since=5")).expect("5"), 5);
        assert_eq!(since(Some("other=1")).expect("absent"), 0);
        let e = since(Some("since=-1")).expect_err("negative");
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("whole number"), "{}", e.message);
    }
}
