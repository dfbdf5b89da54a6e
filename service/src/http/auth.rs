//! Bearer tokens with two roles. `predict` may score readings and list the
//! models; `admin` may do everything (model detail with per-key state,
//! snapshots, backfills). Tokens come from a file (`http.tokens_file`, lines
//! `ROLE TOKEN`) or the environment (`STREAMFIT_HTTP_TOKENS`,
//! `ROLE:TOKEN,...`); only their SHA-256 digests are kept, and a presented
//! token is compared with every digest in constant time. Some paths stay
//! open (`http.open_paths`: probes and scrapers).

use std::path::Path;

use anyhow::{bail, Context, Result};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Score readings, list the models.
    Predict,
    /// Everything.
    Admin,
}

impl Role {
    fn parse(s: &str) -> Result<Role> {
        match s.trim() {
            "predict" => Ok(Role::Predict),
            "admin" => Ok(Role::Admin),
            other => bail!("the role {other:?} should be `predict` or `admin`"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Role::Predict => "predict",
            Role::Admin => "admin",
        }
    }
}

/// Tokens shorter than this are refused: they can be guessed.
pub const MIN_TOKEN_LEN: usize = 16;

/// The accepted tokens (as digests) and the paths open without one.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    digests: Vec<([u8; 32], Role)>,
    open: Vec<String>,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Tokens {
    /// Tokens from `file` (lines `ROLE TOKEN`, `#` comments) and `inline`
    /// (`ROLE:TOKEN,...`); `open` paths need none.
    pub fn load(file: Option<&Path>, inline: Option<&str>, open: &[String]) -> Result<Tokens> {
        let mut t = Tokens {
            digests: Vec::new(),
            open: open.to_vec(),
        };
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).with_context(|| {
                format!(
                    "cannot read the tokens file {} (`http.tokens_file`)",
                    path.display()
                )
            })?;
            for (i, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let (role, token) = line.split_once(char::is_whitespace).with_context(|| {
                    format!(
                        "{} line {}: should be `ROLE TOKEN` (`predict` or `admin`, a space, the token)",
                        path.display(),
                        i + 1
                    )
                })?;
                t.add(role, token.trim())
                    .with_context(|| format!("{} line {}", path.display(), i + 1))?;
            }
        }
        if let Some(list) = inline {
            for (i, item) in list.split(',').filter(|x| !x.trim().is_empty()).enumerate() {
                let (role, token) = item.split_once(':').with_context(|| {
                    format!(
                        "`http.tokens` (STREAMFIT_HTTP_TOKENS) item {}: should be ROLE:TOKEN",
                        i + 1
                    )
                })?;
                t.add(role, token.trim()).with_context(|| {
                    format!("`http.tokens` (STREAMFIT_HTTP_TOKENS) item {}", i + 1)
                })?;
            }
        }
        Ok(t)
    }

    fn add(&mut self, role: &str, token: &str) -> Result<()> {
        let role = Role::parse(role)?;
        if token.len() < MIN_TOKEN_LEN {
            bail!(
                "a token should be at least {MIN_TOKEN_LEN} characters (make one with `openssl rand -hex 32`)"
            );
        }
        self.digests.push((digest(token), role));
        Ok(())
    }

    /// True when no token is configured: the API is open.
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// The role of `token`, checked against every digest (no early exit).
    pub fn role_of(&self, token: &str) -> Option<Role> {
        let d = digest(token);
        let mut found = None;
        for (known, role) in &self.digests {
            if bool::from(known.ct_eq(&d)) {
                found = found.max(Some(*role));
            }
        }
        found
    }

    fn is_open(&self, path: &str) -> bool {
        self.open.iter().any(|p| p == path)
    }
}

/// The role a request needs: `None` when its path is open.
pub fn required(tokens: &Tokens, method: &Method, path: &str) -> Option<Role> {
    if tokens.is_open(path) || (method == Method::GET && super::dashboard::ASSETS.contains(&path)) {
        return None;
    }
    let predict =
        (method == Method::POST && path.starts_with("/v1/models/") && path.ends_with("/predict"))
            || (method == Method::GET && path == "/v1/models")
            || path == "/openapi.json";
    Some(if predict { Role::Predict } else { Role::Admin })
}

fn refuse(status: StatusCode, message: String) -> Response {
    let mut r = (status, Json(json!({ "error": message }))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"streamfit\""),
        );
    }
    r
}

/// Middleware: lets a request through when its path is open or its bearer
/// token's role suffices; else 401 (no or unknown token) or 403 (a role
/// too small), as JSON. No tokens configured: everything is open.
pub async fn check(
    State(tokens): State<std::sync::Arc<Tokens>>,
    req: Request,
    next: Next,
) -> Response {
    if tokens.is_empty() {
        return next.run(req).await;
    }
    let Some(need) = required(&tokens, req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    let Some(token) = presented else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "this endpoint needs a token: send `Authorization: Bearer <token>`".into(),
        );
    };
    match tokens.role_of(token) {
        None => refuse(
            StatusCode::UNAUTHORIZED,
            "the bearer token is not known to this service".into(),
        ),
        Some(role) if role < need => refuse(
            StatusCode::FORBIDDEN,
            format!(
                "a `{}` token may not use {} {}: it needs an `{}` token",
                role.name(),
                req.method(),
                req.uri().path(),
                need.name()
            ),
        ),
        Some(_) => next.run(req).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "predict-token-0123456789";
    const A: &str = "admin-token-0123456789ab";

    fn tokens() -> Tokens {
        Tokens::load(
            None,
            Some(&format!("predict:{P},admin:{A}")),
            &["/healthz".into(), "/metrics".into()],
        )
        .expect("tokens")
    }

    #[test]
    fn tokens_have_roles_and_only_digests_are_kept() {
        let t = tokens();
        assert_eq!(t.role_of(P), Some(Role::Predict));
        assert_eq!(t.role_of(A), Some(Role::Admin));
        assert_eq!(t.role_of("predict-token-012345678"), None);
        let kept = format!("{t:?}");
        assert!(!kept.contains(P) && !kept.contains(A), "{kept}");
    }

    #[test]
    fn each_endpoint_needs_its_role() {
        let t = tokens();
        let post = Method::POST;
        let get = Method::GET;
        assert_eq!(
            required(&t, &post, "/v1/models/waits/predict"),
            Some(Role::Predict)
        );
        assert_eq!(required(&t, &get, "/v1/models"), Some(Role::Predict));
        assert_eq!(required(&t, &get, "/v1/models/waits"), Some(Role::Admin));
        assert_eq!(
            required(&t, &get, "/v1/models/waits/snapshot"),
            Some(Role::Admin)
        );
        assert_eq!(
            required(&t, &post, "/v1/models/waits/backfill"),
            Some(Role::Admin)
        );
        assert_eq!(required(&t, &get, "/readyz"), Some(Role::Admin));
        assert_eq!(required(&t, &get, "/healthz"), None);
        assert_eq!(required(&t, &get, "/metrics"), None);
        // the dashboard's files hold no data; what it shows needs a token
        assert_eq!(required(&t, &get, "/"), None);
        assert_eq!(required(&t, &get, "/dashboard.js"), None);
        assert_eq!(required(&t, &post, "/"), Some(Role::Admin));
        assert_eq!(
            required(&t, &get, "/v1/models/waits/history"),
            Some(Role::Admin)
        );
    }

    #[test]
    fn bad_token_lists_name_what_to_fix() {
        let e = Tokens::load(None, Some("reader:0123456789abcdef0123"), &[]).expect_err("role");
        assert!(format!("{e:#}").contains("`predict` or `admin`"), "{e:#}");
        let e = Tokens::load(None, Some("admin:short"), &[]).expect_err("short");
        assert!(format!("{e:#}").contains("at least 16"), "{e:#}");
        let dir = tempfile::tempdir().expect("dir");
        let f = dir.path().join("tokens");
        std::fs::write(&f, format!("# ops\nadmin {A}\npredict\n")).expect("write");
        let e = Tokens::load(Some(&f), None, &[]).expect_err("line 3");
        assert!(format!("{e:#}").contains("line 3"), "{e:#}");
    }
}
