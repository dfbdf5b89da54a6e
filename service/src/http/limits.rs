//! Bounds on requests, and errors that are always the documented JSON: a
//! cap on requests in flight (past it 503 with `Retry-After`, at once,
//! instead of queueing), a time limit per request, and every error answer
//! that is not JSON yet (axum's own 405, 413, ...) rewritten as
//! `{"error": ...}` saying what to fix. A 413 over HTTP/1 closes its
//! connection (`Connection: close`): the unread rest of the body is still
//! on it.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode, Version};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use tokio::sync::Semaphore;

/// The request bounds.
#[derive(Debug)]
pub struct Guard {
    permits: Arc<Semaphore>,
    max_in_flight: usize,
    timeout: Duration,
    max_body: usize,
}

impl Guard {
    /// At most `max_in_flight` requests at once, each within `timeout`;
    /// `max_body` is named in 413 answers.
    pub fn new(max_in_flight: usize, timeout: Duration, max_body: usize) -> Guard {
        Guard {
            permits: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
            timeout,
            max_body,
        }
    }
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// Middleware: the bounds, then JSON errors.
pub async fn guard(State(g): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    let Ok(_permit) = g.permits.clone().try_acquire_owned() else {
        let mut r = error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{} requests are in flight, the most this instance takes (`http.max_in_flight`); retry shortly",
                g.max_in_flight
            ),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return r;
    };
    let path = req.uri().path().to_owned();
    let http1 = req.version() < Version::HTTP_2;
    let response = match tokio::time::timeout(g.timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "{path} took longer than {} ms (`http.request_timeout_ms`)",
                    g.timeout.as_millis()
                ),
            )
        }
    };
    let mut response = as_json(response, &path, g.max_body);
    if http1 && response.status() == StatusCode::PAYLOAD_TOO_LARGE {
        // the rest of the body is never read, so the connection cannot
        // carry another request: said, so that a client does not send its
        // next request down a connection the server is closing
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// The methods an endpoint of this API takes (for a 405 without `Allow`).
fn allowed(path: &str) -> &'static str {
    if ["/predict", "/backfill", "/promote", "/rollback", "/labels"]
        .iter()
        .any(|end| path.ends_with(end))
    {
        "POST"
    } else {
        "GET"
    }
}

/// An error answer as the documented JSON (JSON ones pass, except 413,
/// which always names the limit).
fn as_json(response: Response, path: &str, max_body: usize) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json && status != StatusCode::PAYLOAD_TOO_LARGE {
        return response;
    }
    let mut allow = None;
    let message = match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            let given = response
                .headers()
                .get(header::ALLOW)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let methods = given.unwrap_or_else(|| allowed(path).to_owned());
            let message = format!("{path} does not take this method; it takes {methods}");
            allow = Some(methods);
            message
        }
        StatusCode::PAYLOAD_TOO_LARGE => format!(
            "the body is larger than {max_body} bytes, the most this service takes (`service.max_body_bytes`)"
        ),
        other => other
            .canonical_reason()
            .unwrap_or("the request failed")
            .to_owned(),
    };
    let (mut parts, _) = response.into_parts();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    if let Some(methods) = allow.and_then(|m| HeaderValue::from_str(&m).ok()) {
        parts.headers.insert(header::ALLOW, methods);
    }
    let body = json!({ "error": message }).to_string();
    Response::from_parts(parts, Body::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(r: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 16)
            .await
            .expect("body");
        serde_json::from_slice(&bytes).expect("JSON")
    }

    #[tokio::test]
    async fn past_the_cap_a_request_is_answered_503_at_once() {
        use tower::ServiceExt;
        let release = Arc::new(tokio::sync::Notify::new());
        let held = release.clone();
        let app = axum::Router::new()
            .route(
                "/slow",
                axum::routing::get(move || {
                    let held = held.clone();
                    async move {
                        held.notified().await;
                        "done"
                    }
                }),
            )
            .layer(axum::middleware::from_fn_with_state(
                Arc::new(Guard::new(1, Duration::from_secs(30), 1000)),
                guard,
            ));
        let req = || {
            Request::builder()
                .uri("/slow")
                .body(Body::empty())
                .expect("request")
        };
        let first = tokio::spawn(app.clone().oneshot(req()));
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let second = app.clone().oneshot(req()).await.expect("answers");
        assert_eq!(second.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(second.headers()[header::RETRY_AFTER], "1");
        let v = body(second).await;
        assert!(
            v["error"]
                .as_str()
                .expect("error")
                .contains("http.max_in_flight"),
            "{v}"
        );
        release.notify_one();
        let first = first.await.expect("joins").expect("answers");
        assert_eq!(first.status(), StatusCode::OK, "the first one was served");
        let third = app.oneshot(req());
        release.notify_one();
        assert_eq!(
            third.await.expect("answers").status(),
            StatusCode::OK,
            "room again"
        );
    }

    #[tokio::test]
    async fn a_body_over_the_limit_closes_an_http1_connection() {
        use tower::ServiceExt;
        let app = axum::Router::new()
            .route(
                "/in",
                axum::routing::post(|body: String| async move { body }),
            )
            .layer(axum::extract::DefaultBodyLimit::max(10))
            .layer(axum::middleware::from_fn_with_state(
                Arc::new(Guard::new(8, Duration::from_secs(30), 10)),
                guard,
            ));
        let req = |body: &'static str, version: Version| {
            Request::builder()
                .method("POST")
                .uri("/in")
                .version(version)
                .body(Body::from(body))
                .expect("request")
        };
        let r = app
            .clone()
            .oneshot(req("far more than ten bytes", Version::HTTP_11))
            .await
            .expect("answers");
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(r.headers()[header::CONNECTION], "close");
        assert!(body(r).await["error"]
            .as_str()
            .expect("error")
            .contains("10 bytes"));
        let r = app
            .clone()
            .oneshot(req("far more than ten bytes", Version::HTTP_2))
            .await
            .expect("answers");
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(
            r.headers().get(header::CONNECTION).is_none(),
            "no connection header in HTTP/2"
        );
        let r = app
            .oneshot(req("short", Version::HTTP_11))
            .await
            .expect("answers");
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.headers().get(header::CONNECTION).is_none(), "kept open");
    }

    #[tokio::test]
    async fn a_request_over_the_time_limit_is_answered_503() {
        use tower::ServiceExt;
        let app = axum::Router::new()
            .route(
                "/stuck",
                axum::routing::get(|| async {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    "late"
                }),
            )
            .layer(axum::middleware::from_fn_with_state(
                Arc::new(Guard::new(8, Duration::from_millis(100), 1000)),
                guard,
            ));
        let r = app
            .oneshot(
                Request::builder()
                    .uri("/stuck")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("answers");
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let v = body(r).await;
        assert!(
            v["error"].as_str().expect("error").contains("100 ms"),
            "{v}"
        );
    }

    #[tokio::test]
    async fn error_answers_become_json_that_says_what_to_fix() {
        let r = Response::builder()
            .status(StatusCode::METHOD_NOT_ALLOWED)
            .header(header::ALLOW, "POST")
            .body(Body::empty())
            .expect("response");
        let r = as_json(r, "/v1/models/waits/predict", 1000);
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.headers()[header::ALLOW], "POST");
        let v = body(r).await;
        assert!(
            v["error"].as_str().expect("error").contains("takes POST"),
            "{v}"
        );
        // axum's own 405 names no method: the API's routes say which
        let r = Response::builder()
            .status(StatusCode::METHOD_NOT_ALLOWED)
            .body(Body::empty())
            .expect("response");
        let r = as_json(r, "/v1/models/waits/backfill", 1000);
        assert_eq!(r.headers()[header::ALLOW], "POST");

        let r = error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "length limit exceeded".into(),
        );
        let v = body(as_json(r, "/v1/models/waits/predict", 1000)).await;
        assert!(
            v["error"].as_str().expect("error").contains("1000 bytes"),
            "{v}"
        );

        let ok = Response::new(Body::from("fine"));
        assert_eq!(as_json(ok, "/healthz", 1000).status(), StatusCode::OK);
    }
}
