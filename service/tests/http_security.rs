//! The HTTP API facing clients it cannot trust: bearer tokens with roles,
//! HTTPS (plaintext refused), secure by default on an open address, the
//! documented JSON for every error, and slow or idle clients that cannot
//! starve a normal one.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use reqwest::StatusCode;

const PREDICT: &str = "predict-token-for-the-tests-0123";
const ADMIN: &str = "admin-token-for-the-tests-456789";

fn tokens_env() -> String {
    format!("predict:{PREDICT},admin:{ADMIN}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_have_roles_over_https_and_every_error_is_json() {
    let bootstrap = bootstrap();
    let dir = tempfile::tempdir().expect("tempdir");
    let run = setup(dir.path(), &bootstrap, "waits");
    let (ca, cert, key) = make_cert(dir.path());
    let tokens = tokens_env();
    let env = [
        ("STREAMFIT_HTTP_TLS_CERT", cert.to_str().expect("utf-8")),
        ("STREAMFIT_HTTP_TLS_KEY", key.to_str().expect("utf-8")),
        ("STREAMFIT_HTTP_TOKENS", tokens.as_str()),
    ];
    let svc = Service::start_with(&run.config, &env);
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&ca).expect("ca")).expect("pem");
    let client = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .expect("client");
    let base = format!("https://{}", run.http);
    wait_ready_with(&client, &base).await;
    produce(&bootstrap, &run.input, &waits(200));
    wait_for_outputs(&bootstrap, &run, 200, Duration::from_secs(60));

    let reading = r#"{"ride": "soarin", "ts": "2018-06-01T10:00:00", "posted_wait": 30}"#;
    // (method, path, body, role it needs)
    let endpoints = [
        ("GET", "/v1/models", None, "predict"),
        ("POST", "/v1/models/waits/predict", Some(reading), "predict"),
        ("GET", "/openapi.json", None, "predict"),
        ("GET", "/v1/models/waits", None, "admin"),
        ("GET", "/v1/models/waits/snapshot", None, "admin"),
        (
            "POST",
            "/v1/models/waits/backfill",
            Some(r#"{"from": "2099-01-01T00:00:00Z"}"#),
            "admin",
        ),
    ];
    let call = |method: &str, path: &str, body: Option<&str>, token: Option<&str>| {
        let mut r = match method {
            "GET" => client.get(format!("{base}{path}")),
            _ => client
                .post(format!("{base}{path}"))
                .header("content-type", "application/json")
                .body(body.unwrap_or("{}").to_owned()),
        };
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    for (method, path, body, role) in endpoints {
        let r = call(method, path, body, None).await.expect("answers");
        assert_eq!(
            r.status(),
            StatusCode::UNAUTHORIZED,
            "{method} {path} without a token"
        );
        assert!(r.headers().contains_key("www-authenticate"));
        let v: serde_json::Value = r.json().await.expect("JSON");
        assert!(
            v["error"].as_str().is_some_and(|e| e.contains("Bearer")),
            "{v}"
        );
        let r = call(method, path, body, Some("not-a-token-anybody-knows-0000"))
            .await
            .expect("answers");
        assert_eq!(
            r.status(),
            StatusCode::UNAUTHORIZED,
            "{method} {path}, unknown token"
        );

        let r = call(method, path, body, Some(PREDICT))
            .await
            .expect("answers");
        if role == "admin" {
            assert_eq!(
                r.status(),
                StatusCode::FORBIDDEN,
                "{method} {path} with a predict token"
            );
            let v: serde_json::Value = r.json().await.expect("JSON");
            assert!(
                v["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("`admin` token")),
                "{v}"
            );
        } else {
            assert!(
                r.status().is_success(),
                "{method} {path} with a predict token: {}",
                r.status()
            );
        }
        let r = call(method, path, body, Some(ADMIN))
            .await
            .expect("answers");
        assert!(
            r.status().is_success(),
            "{method} {path} with an admin token: {}",
            r.status()
        );
    }
    // probes and scrapers need no token
    for path in ["/healthz", "/readyz", "/metrics"] {
        let r = client
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("answers");
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }
    // plaintext HTTP on the HTTPS port gets no answer
    let plain = reqwest::Client::new()
        .get(format!("http://{}/healthz", run.http))
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    assert!(plain.is_err(), "plaintext must be refused: {plain:?}");

    // every error is the documented JSON, saying what to fix
    let r = client
        .get(format!("{base}/v1/models/waits/predict"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("answers");
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers()["allow"], "POST");
    let v: serde_json::Value = r.json().await.expect("405 as JSON");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("takes POST")),
        "{v}"
    );
    let big = format!("[{}]", vec![reading; 20_000].join(","));
    let r = call("POST", "/v1/models/waits/predict", Some(&big), Some(ADMIN))
        .await
        .expect("answers");
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // the unread rest of the body is on the connection: it is closed, and
    // says so, so that the next request does not go down it
    assert_eq!(r.headers()["connection"], "close");
    let v: serde_json::Value = r.json().await.expect("413 as JSON");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("1048576 bytes")),
        "{v}"
    );
    let deep = format!("{}{}", "[".repeat(50_000), "]".repeat(50_000));
    let r = call("POST", "/v1/models/waits/predict", Some(&deep), Some(ADMIN))
        .await
        .expect("answers");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "deeply nested");
    let v: serde_json::Value = r.json().await.expect("400 as JSON");
    assert!(v["error"].is_string(), "{v}");
    // a backfill from "latest" (undocumented) is refused, naming the field
    let r = call(
        "POST",
        "/v1/models/waits/backfill",
        Some(r#"{"from": "latest"}"#),
        Some(ADMIN),
    )
    .await
    .expect("answers");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let v: serde_json::Value = r.json().await.expect("JSON");
    assert_eq!(v["field"], "from", "{v}");
    svc.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_address_without_tokens_is_refused_unless_said_so() {
    let bootstrap = bootstrap();
    let dir = tempfile::tempdir().expect("tempdir");
    let run = setup(dir.path(), &bootstrap, "waits");
    let port = run.http.rsplit(':').next().expect("port").to_owned();
    let open = format!("0.0.0.0:{port}");
    let log = dir.path().join("refused.log");
    let mut svc = Service::start_logged(
        &run.config,
        &[("STREAMFIT_SERVICE_HTTP_ADDR", open.as_str())],
        &log,
    );
    let status = svc.exited(Duration::from_secs(30)).await;
    assert!(!status.success());
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(
        text.contains("can be reached from other hosts")
            && text.contains("http.tokens_file")
            && text.contains("http.allow_unauthenticated"),
        "{text}"
    );
    // a tokens file without a token is no protection either
    let empty = dir.path().join("tokens");
    std::fs::write(&empty, "# no tokens yet\n").expect("tokens file");
    let log = dir.path().join("empty-tokens.log");
    let mut svc = Service::start_logged(
        &run.config,
        &[
            ("STREAMFIT_SERVICE_HTTP_ADDR", open.as_str()),
            ("STREAMFIT_HTTP_TOKENS_FILE", empty.to_str().expect("utf-8")),
        ],
        &log,
    );
    assert!(!svc.exited(Duration::from_secs(30)).await.success());
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(text.contains("holds no token"), "{text}");
    // said so: it serves
    let svc = Service::start_with(
        &run.config,
        &[
            ("STREAMFIT_SERVICE_HTTP_ADDR", open.as_str()),
            ("STREAMFIT_HTTP_ALLOW_UNAUTHENTICATED", "true"),
        ],
    );
    wait_ready(&run.http).await;
    svc.stop();
}

/// Sends a request's first header line and then one header byte a second,
/// never finishing; the time the server closed the connection, if it did.
fn slow_header_client(addr: &str, hold: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).expect("connects");
    s.set_read_timeout(Some(Duration::from_millis(10)))
        .expect("timeout");
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .expect("first bytes");
    let mut buf = [0u8; 512];
    while started.elapsed() < hold {
        std::thread::sleep(Duration::from_millis(990));
        match s.read(&mut buf) {
            // the server answered (408) or closed: it gave up on us
            Ok(_) => return Some(started.elapsed()),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return Some(started.elapsed()),
        }
        if s.write_all(b"a").is_err() {
            return Some(started.elapsed());
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_clients_do_not_starve_a_normal_one() {
    let bootstrap = bootstrap();
    let dir = tempfile::tempdir().expect("tempdir");
    let run = setup(dir.path(), &bootstrap, "waits");
    let svc = Service::start_with(&run.config, &[("STREAMFIT_HTTP_HEADER_TIMEOUT_MS", "3000")]);
    wait_ready(&run.http).await;
    produce(&bootstrap, &run.input, &waits(200));
    wait_for_outputs(&bootstrap, &run, 200, Duration::from_secs(60));

    let hold = Duration::from_secs(30);
    // 2,000 connections that never send a byte
    let idle: Vec<TcpStream> = (0..2_000)
        .map(|i| {
            TcpStream::connect(&run.http).unwrap_or_else(|e| {
                panic!("idle connection {i} (raise `ulimit -n` past 4,500): {e}")
            })
        })
        .collect();
    // 20 clients sending a header a byte a second
    let slow: Vec<_> = (0..20)
        .map(|_| {
            let addr = run.http.clone();
            std::thread::spawn(move || slow_header_client(&addr, hold))
        })
        .collect();
    // meanwhile a normal client keeps predicting, ten times a second
    let client = reqwest::Client::new();
    let url = format!("http://{}/v1/models/waits/predict", run.http);
    let reading = r#"{"ride": "soarin", "ts": "2018-06-01T10:00:00", "posted_wait": 30}"#;
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut answered = 0;
    while started.elapsed() < hold {
        let t = Instant::now();
        let r = client
            .post(&url)
            .header("content-type", "application/json")
            .body(reading)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .expect("/predict answers while idle and slow clients hold connections");
        assert_eq!(r.status(), StatusCode::OK);
        slowest = slowest.max(t.elapsed());
        answered += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dropped: Vec<Option<Duration>> =
        slow.into_iter().map(|t| t.join().expect("joins")).collect();
    eprintln!("{answered} predictions in {hold:?}, slowest {slowest:?}; slow clients dropped after {dropped:?}");
    assert!(answered >= 200, "{answered} predictions in 30 s");
    assert!(
        slowest < Duration::from_secs(1),
        "slowest /predict {slowest:?}"
    );
    // the slow clients really were slow, and the server gave up on each
    // after its header timeout (3 s), not at the end of the 30 s
    for (i, d) in dropped.iter().enumerate() {
        let d = d.unwrap_or_else(|| panic!("slow client {i} was never dropped within {hold:?}"));
        assert!(
            d >= Duration::from_secs(2) && d < Duration::from_secs(10),
            "slow client {i} dropped after {d:?}"
        );
    }
    drop(idle);
    svc.stop();
}
