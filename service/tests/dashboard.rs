//! The live dashboard in a real browser: headless Chromium (Debian's
//! `chromium` and `chromium-driver`, installed by deploy/setup.sh), driven
//! over the WebDriver protocol, against the real binary on the real broker
//! with readings flowing and tokens required. The page asks for a token,
//! then shows every configured model, its charts' points change from one
//! look to the next, a backfill shows with its state, and the browser logs
//! no console error. The screenshot
//! goes to `$CARGO_TARGET_DIR/dashboard.png` (or `STREAMFIT_TEST_SCREENSHOT`);
//! the README shows one.

mod common;

use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use serde_json::{json, Value};

const ADMIN: &str = "admin-token-for-the-dashboard-test";

/// A chromedriver process and one browser session.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
}

impl Browser {
    async fn start() -> Browser {
        for bin in ["/usr/bin/chromedriver", "/usr/bin/chromium"] {
            assert!(
                std::path::Path::new(bin).exists(),
                "{bin} is missing: run deploy/setup.sh (it installs Debian's chromium and chromium-driver; this test never skips)"
            );
        }
        let port = free_port();
        // a process group of its own: chromium is chromedriver's child, and
        // killing chromedriver alone left the browser running after the suite
        let driver = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("chromedriver starts");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = match http.get(format!("{base}/status")).send().await {
                Ok(r) => r
                    .json::<Value>()
                    .await
                    .ok()
                    .and_then(|v| v["value"]["ready"].as_bool()),
                Err(_) => None,
            };
            if ready == Some(true) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver not ready within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1700"]
            },
            "goog:loggingPrefs": { "browser": "ALL" }
        }}});
        // a browser that dies while starting ("session not created") is
        // chromium's, not the dashboard's: three tries, each error said
        let mut tries = Vec::new();
        let session = loop {
            let r: Value = http
                .post(format!("{base}/session"))
                .json(&caps)
                .send()
                .await
                .expect("new session")
                .json()
                .await
                .expect("JSON");
            if let Some(s) = r["value"]["sessionId"].as_str() {
                break s.to_owned();
            }
            eprintln!("chromium did not start: {r}");
            tries.push(r);
            assert!(tries.len() < 3, "no browser session in 3 tries: {tries:?}");
            tokio::time::sleep(Duration::from_secs(1)).await;
        };
        Browser {
            driver,
            base,
            session,
            http,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut req = self.http.request(method, &url);
        if !body.is_null() {
            req = req.json(&body);
        }
        let r: Value = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .json()
            .await
            .expect("JSON");
        assert!(
            r["value"].get("error").is_none(),
            "WebDriver {path} failed: {r}"
        );
        r["value"].clone()
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.call(reqwest::Method::POST, path, body).await
    }

    /// Runs `script` (a function body) in the page.
    async fn eval(&self, script: &str) -> Value {
        self.post("/execute/sync", json!({ "script": script, "args": [] }))
            .await
    }

    /// Waits up to `within` for `script` to return something truthy.
    async fn until(&self, script: &str, within: Duration, what: &str) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let v = self.eval(script).await;
            let truthy = match &v {
                Value::Null | Value::Bool(false) => false,
                Value::String(s) => !s.is_empty(),
                Value::Array(a) => !a.is_empty(),
                _ => true,
            };
            if truthy {
                return v;
            }
            if Instant::now() >= deadline {
                let status = self
                    .eval("return document.getElementById('status')?.textContent || ''")
                    .await;
                panic!("{what}: not within {within:?} (the page's status line: {status})");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn element(&self, css: &str) -> String {
        let v = self
            .post("/element", json!({ "using": "css selector", "value": css }))
            .await;
        v.as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_owned()
    }

    /// The browser's console entries at level SEVERE (errors).
    async fn console_errors(&self) -> Vec<Value> {
        let logs = self.post("/se/log", json!({ "type": "browser" })).await;
        logs.as_array()
            .expect("log entries")
            .iter()
            .filter(|e| e["level"] == "SEVERE")
            .cloned()
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // the whole group: chromedriver and the browser it started
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_every_model_learning_live_behind_a_token() {
    let bootstrap = bootstrap();
    let dir = tempfile::tempdir().expect("tempdir");
    let heart_topics = (
        unique("dash.heart"),
        unique("dash.heart.out"),
        unique("dash.heart.dead"),
    );
    let text_topics = (
        unique("dash.tweets"),
        unique("dash.sentiment.out"),
        unique("dash.tweets.dead"),
    );
    let run = setup_table(
        dir.path(),
        &bootstrap,
        "waits",
        3,
        "",
        |input, output, dead| {
            format!(
                "{}{}{}",
                model_table("waits", input, output, dead, 500),
                model_table(
                    "heart",
                    &heart_topics.0,
                    &heart_topics.1,
                    &heart_topics.2,
                    100
                ),
                model_table(
                    "sentiment",
                    &text_topics.0,
                    &text_topics.1,
                    &text_topics.2,
                    200
                )
            )
        },
    );
    let tokens = format!("admin:{ADMIN}");
    let svc = Service::start_with(&run.config, &[("STREAMFIT_HTTP_TOKENS", tokens.as_str())]);
    let authed = reqwest::Client::builder()
        .default_headers(
            [(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {ADMIN}").parse().expect("header"),
            )]
            .into_iter()
            .collect(),
        )
        .build()
        .expect("client");
    wait_ready_with(&authed, &format!("http://{}", run.http)).await;
    produce(&bootstrap, &heart_topics.0, &heart());
    // readings keep flowing while the browser looks: 2,000 a second for 120 s at most
    const FLOW: usize = 240_000;
    let flow = publish_steadily(&bootstrap, &run.input, waits(FLOW), 2_000);
    // each step's time, printed with a failure: how far the page came
    let started = Instant::now();
    let step = |what: &str| eprintln!("{:>5.1} s  {what}", started.elapsed().as_secs_f64());

    let browser = Browser::start().await;
    step("browser started");
    browser
        .post("/url", json!({ "url": format!("http://{}/", run.http) }))
        .await;
    // the page knows the API wants a token and asks before any request
    browser
        .until(
            "return !document.getElementById('token-form').hidden",
            Duration::from_secs(10),
            "the token form",
        )
        .await;
    let input = browser.element("#token").await;
    browser
        .post(&format!("/element/{input}/value"), json!({ "text": ADMIN }))
        .await;
    let submit = browser.element("#token-submit").await;
    browser
        .post(&format!("/element/{submit}/click"), json!({}))
        .await;

    // every configured model gets its card
    let shown = browser
        .until(
            "const m = [...document.querySelectorAll('section.card')].map(c => c.dataset.model); return m.length >= 3 ? m.sort() : null",
            Duration::from_secs(20),
            "a card per model",
        )
        .await;
    assert_eq!(shown, json!(["heart", "sentiment", "waits"]));
    step("a card per model");
    assert!(
        browser
            .eval("return document.getElementById('token-form').hidden")
            .await
            .as_bool()
            .expect("bool"),
        "the token form goes once the token works"
    );

    // the charts' points change while readings flow
    let points = "return document.querySelector('section[data-model=waits] svg[data-chart=learned] polyline')?.getAttribute('points') || ''";
    let first = browser
        .until(
            points,
            Duration::from_secs(20),
            "the learned chart's points",
        )
        .await;
    let sent_before = flow.sent();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let second = browser.eval(points).await;
    let sent_after = flow.sent();
    step("the learned chart looked at twice");
    assert!(
        sent_before < sent_after && sent_after < FLOW,
        "readings were not flowing while the chart was looked at ({sent_before} then {sent_after} of {FLOW} sent)"
    );
    assert_ne!(first, second, "the chart did not change in 3 s of readings");
    let seen = browser
        .eval("return document.querySelector('section[data-model=waits] .tiles .tile:nth-child(5) b').textContent")
        .await;
    assert_ne!(seen, json!("0"), "readings seen");
    let recent = browser
        .eval(
            "return document.querySelectorAll('section[data-model=waits] table.recent tr').length",
        )
        .await;
    assert!(
        recent.as_u64().expect("count") > 1,
        "recent predictions listed"
    );

    // a model whose topic is still empty does not know its lag, and says
    // so rather than printing the API's -1
    let tile = |n: usize| {
        format!("return document.querySelector('section[data-model=sentiment] .tiles .tile:nth-child({n}) b')?.textContent || ''")
    };
    browser
        .until(
            "const t = document.querySelector('section[data-model=sentiment] .tiles .tile:nth-child(1) b')?.textContent; return t && t !== '–'",
            Duration::from_secs(20),
            "a sample on the sentiment card (its readings/s)",
        )
        .await;
    assert_eq!(browser.eval(&tile(2)).await, json!("–"), "an unknown lag");
    // with samples but no values its charts say why, not "waiting for samples"
    for (chart, why) in [
        (
            "metric",
            "nothing scored yet: no reading has come with its label",
        ),
        ("lag", "not known until a reading is read"),
    ] {
        browser
            .until(
                &format!("return document.querySelector('section[data-model=sentiment] svg[data-chart={chart}] text')?.textContent === {why:?}"),
                Duration::from_secs(10),
                &format!("the sentiment card's {chart} chart saying {why:?}"),
            )
            .await;
    }
    step("the sentiment card before its tweets");
    // tweets arrive: the multiclass card shows accuracy and macro-F1, and
    // its recent predictions name classes
    produce(&bootstrap, &text_topics.0, &tweets(2_000));
    let accuracy = browser
        .until(
            "const t = document.querySelector('section[data-model=sentiment] .tiles .tile:nth-child(3) b')?.textContent; return t && t !== '–' ? t : null",
            Duration::from_secs(60),
            "the sentiment card's accuracy",
        )
        .await;
    step("the sentiment card's accuracy");
    let accuracy: f64 = accuracy.as_str().expect("text").parse().expect("a number");
    assert!((0.0..=1.0).contains(&accuracy), "accuracy {accuracy}");
    let label = browser
        .eval("return document.querySelector('section[data-model=sentiment] .tiles .tile:nth-child(4) span')?.textContent || ''")
        .await;
    assert_eq!(label, json!("macro-F1 (rolling)"));
    let classes = browser
        .eval("return [...document.querySelectorAll('section[data-model=sentiment] table.recent td')].map(td => td.textContent).filter(t => ['negative', 'neutral', 'positive'].includes(t)).length")
        .await;
    assert!(
        classes.as_u64().expect("count") > 0,
        "class names in the recent predictions"
    );

    // a backfill shows on the waits card, with its state
    let r = authed
        .post(format!("http://{}/v1/models/waits/backfill", run.http))
        .json(&json!({ "from": "earliest", "force": true }))
        .send()
        .await
        .expect("backfill answers");
    assert_eq!(r.status(), 202, "{:?}", r.text().await);
    let shown = browser
        .until(
            "return document.querySelector('section[data-model=waits] .backfill')?.textContent || ''",
            Duration::from_secs(30),
            "the backfill on the page",
        )
        .await;
    assert!(
        shown
            .as_str()
            .is_some_and(|t| t.starts_with("backfill from earliest")),
        "{shown}"
    );
    step("the backfill on the waits card");

    let shot = browser
        .call(reqwest::Method::GET, "/screenshot", Value::Null)
        .await;
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot.as_str().expect("base64"))
        .expect("PNG");
    let path = std::env::var("STREAMFIT_TEST_SCREENSHOT").unwrap_or_else(|_| {
        let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
        format!("{target}/dashboard.png")
    });
    std::fs::write(&path, &png).expect("screenshot written");
    eprintln!("dashboard screenshot: {path}");

    let errors = browser.console_errors().await;
    assert!(errors.is_empty(), "console errors: {errors:?}");
    drop(browser);
    drop(svc);
}
