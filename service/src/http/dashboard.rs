//! The live dashboard at `GET /`: a page, its script and its style sheet,
//! written here and compiled into the binary (no network at run time). The
//! page holds no data: it polls the API (`/v1/models`, each model's
//! `/history`) with the bearer token the user gives it, so it obeys the
//! same tokens and roles as every other client.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::AppState;

const PAGE: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/dashboard.js");
const STYLE: &str = include_str!("dashboard/dashboard.css");

/// The paths of the dashboard's files: open without a token (they hold no data).
pub const ASSETS: [&str; 3] = ["/", "/dashboard.js", "/dashboard.css"];

/// How the page learns whether to ask for a token before its first request.
const OPEN: &str = r#"<meta name="streamfit-auth" content="open">"#;
const TOKEN: &str = r#"<meta name="streamfit-auth" content="token">"#;

fn asset(content_type: &'static str, body: impl Into<String>) -> Response {
    let body: String = body.into();
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

pub(super) async fn page(State(state): State<AppState>) -> Response {
    let page = if state.tokens_required {
        PAGE.replace(OPEN, TOKEN)
    } else {
        PAGE.to_owned()
    };
    asset("text/html; charset=utf-8", page)
}

pub(super) async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

pub(super) async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_can_be_told_to_ask_for_a_token() {
        assert!(PAGE.contains(OPEN), "the page's auth marker");
        assert!(SCRIPT.contains("streamfit-auth"), "the script reads it");
    }
}
