//! `load-test predict`: drives `POST /v1/models/{name}/predict` with
//! concurrent keep-alive clients, at a fixed rate or flat out, and reports
//! latency percentiles.
//!
//! At a fixed rate the load is open-loop: request `i` is due at
//! `start + i / rate` whatever happened to the earlier ones. A request
//! whose connection was still busy with an earlier one when it fell due is
//! timed from when it was due, so a stalled server shows up in the
//! percentiles instead of silently slowing the load (no coordinated
//! omission). A request whose connection was free is timed from when the
//! client woke to send it: the client's own timer lateness (tokio's timers
//! tick in whole milliseconds, so a sleep ends up to a millisecond or more
//! after it was due) is not the server's; it is reported apart
//! (`late_p50_ms`, `late_p99_ms`).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use serde::Serialize;

/// What to drive.
#[derive(Debug, Clone)]
pub struct Options {
    /// Base URL of the service, e.g. http://127.0.0.1:8080.
    pub url: String,
    /// Model name.
    pub model: String,
    /// Data set whose readings are the request bodies.
    pub data: PathBuf,
    /// Requests per second; 0 = flat out.
    pub rate: u64,
    /// How long to drive, in seconds.
    pub duration: f64,
    /// Concurrent keep-alive connections.
    pub connections: usize,
    /// Readings per request (1 = a JSON object, more = an array).
    pub batch: usize,
    /// Bearer token for every request.
    pub token: Option<String>,
    /// A CA to trust (PEM) for https.
    pub cacert: Option<PathBuf>,
    /// Hide the progress bar.
    pub quiet: bool,
}

/// What happened.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Requests per second asked for (0 = flat out).
    pub target_rate: u64,
    /// Connections used.
    pub connections: usize,
    /// Readings per request.
    pub batch: usize,
    /// Requests answered 200.
    pub requests: u64,
    /// Requests that failed or were answered with another status.
    pub errors: u64,
    /// The first failure, if any.
    pub first_error: Option<String>,
    /// Wall seconds.
    pub seconds: f64,
    /// Answered requests per second.
    pub requests_per_second: f64,
    /// Latency percentiles in milliseconds.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Slowest request.
    pub max_ms: f64,
    /// At a fixed rate: how late the client woke to send a request on a
    /// free connection (its timer's lateness, not counted in the latency),
    /// median and 99th percentile in milliseconds.
    pub late_p50_ms: f64,
    /// 99th percentile of the same.
    pub late_p99_ms: f64,
    /// Readings the service learned per second meanwhile (from /metrics),
    /// to show the learning loop was busy.
    pub learned_per_second: f64,
}

/// `streamfit_readings_learned_total` for the model, from /metrics.
async fn learned(client: &reqwest::Client, url: &str, model: &str) -> Result<u64> {
    let text = client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .with_context(|| format!("cannot reach {url}/metrics; is the service running?"))?
        .text()
        .await
        .context("cannot read /metrics")?;
    let prefix = format!("streamfit_readings_learned_total{{model=\"{model}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("{url}/metrics has no learned count for model {model}"))
}

/// Request bodies: the data set's readings, `batch` per body.
fn bodies(opts: &Options) -> Result<Vec<bytes::Bytes>> {
    let readings = features::datasets::load_readings(&opts.data)
        .with_context(|| format!("cannot load {}", opts.data.display()))?;
    if readings.is_empty() {
        bail!("{} has no readings", opts.data.display());
    }
    let bodies = if opts.batch <= 1 {
        readings
            .iter()
            .map(|r| bytes::Bytes::from(r.json.clone()))
            .collect()
    } else {
        readings
            .chunks(opts.batch)
            .map(|c| {
                let mut b =
                    Vec::with_capacity(c.iter().map(|r| r.json.len() + 1).sum::<usize>() + 2);
                b.push(b'[');
                for (i, r) in c.iter().enumerate() {
                    if i > 0 {
                        b.push(b',');
                    }
                    b.extend_from_slice(&r.json);
                }
                b.push(b']');
                bytes::Bytes::from(b)
            })
            .collect()
    };
    Ok(bodies)
}

/// Drives the endpoint and reports.
pub async fn run(opts: Options) -> Result<Report> {
    if opts.connections == 0 {
        bail!("--connections should be at least 1");
    }
    if !(opts.duration > 0.0 && opts.duration <= 3600.0) {
        bail!("--duration should be between 0 and 3600 seconds");
    }
    let url = opts.url.trim_end_matches('/').to_owned();
    let mut builder = reqwest::Client::builder()
        .pool_max_idle_per_host(opts.connections)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(10));
    if let Some(path) = &opts.cacert {
        let pem = std::fs::read(path)
            .with_context(|| format!("cannot read --cacert {}", path.display()))?;
        let ca = reqwest::Certificate::from_pem(&pem)
            .with_context(|| format!("--cacert {} is not a PEM certificate", path.display()))?;
        builder = builder.add_root_certificate(ca);
    }
    if let Some(token) = &opts.token {
        let mut headers = reqwest::header::HeaderMap::new();
        let value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .context("--token holds characters a header cannot carry")?;
        headers.insert(reqwest::header::AUTHORIZATION, value);
        builder = builder.default_headers(headers);
    }
    let client = builder.build().context("cannot build the HTTP client")?;
    // GET /v1/models: what a `predict` token may read
    let probe = client
        .get(format!("{url}/v1/models"))
        .send()
        .await
        .with_context(|| format!("cannot reach {url}; is the service running?"))?;
    let status = probe.status();
    if !status.is_success() {
        bail!(
            "{url}/v1/models answered {status}{}",
            if status.as_u16() == 401 {
                ": the service wants a token (--token or STREAMFIT_LOAD_TOKEN)"
            } else {
                ""
            }
        );
    }
    let listed: serde_json::Value = probe
        .json()
        .await
        .with_context(|| format!("{url}/v1/models did not answer JSON"))?;
    let known = listed["models"]
        .as_array()
        .is_some_and(|m| m.iter().any(|x| x["name"] == opts.model.as_str()));
    if !known {
        bail!("{url} has no model named {}: {listed}", opts.model);
    }
    let bodies = Arc::new(bodies(&opts)?);
    let endpoint = Arc::new(format!("{url}/v1/models/{}/predict", opts.model));
    let learned_before = learned(&client, &url, &opts.model).await?;
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(opts.duration);
    let next = Arc::new(AtomicU64::new(0));
    let bar = crate::bar((opts.duration * 10.0) as u64, opts.quiet);
    bar.set_message(format!(
        "POST {endpoint} {}",
        if opts.rate > 0 {
            format!("at {} req/s", opts.rate)
        } else {
            "flat out".into()
        }
    ));
    let mut tasks = Vec::with_capacity(opts.connections);
    for _ in 0..opts.connections {
        let (client, bodies, endpoint, next) = (
            client.clone(),
            bodies.clone(),
            endpoint.clone(),
            next.clone(),
        );
        let rate = opts.rate;
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
                .context("cannot make a latency histogram")?;
            let mut late = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
                .context("cannot make a latency histogram")?;
            let (mut ok, mut errors, mut first_error) = (0u64, 0u64, None::<String>);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                // when the request's latency is counted from
                let clock = if rate > 0 {
                    let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
                    if due >= deadline {
                        break;
                    }
                    let free_in_time = Instant::now() < due;
                    tokio::time::sleep_until(due.into()).await;
                    if free_in_time {
                        let woke = Instant::now();
                        late.saturating_record(((woke - due).as_micros() as u64).max(1));
                        woke
                    } else {
                        due
                    }
                } else {
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    now
                };
                let body = bodies[i as usize % bodies.len()].clone();
                let answer = client
                    .post(endpoint.as_str())
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                let outcome = match answer {
                    Ok(r) if r.status().is_success() => {
                        r.bytes().await.map(|_| ()).map_err(|e| e.to_string())
                    }
                    Ok(r) => {
                        let status = r.status();
                        Err(format!("{status}: {}", r.text().await.unwrap_or_default()))
                    }
                    Err(e) => Err(e.to_string()),
                };
                match outcome {
                    Ok(()) => {
                        ok += 1;
                        let micros = clock.elapsed().as_micros() as u64;
                        hist.saturating_record(micros.max(1));
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
            }
            anyhow::Ok((hist, late, ok, errors, first_error))
        }));
    }
    let ticker = {
        let bar = bar.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                bar.set_position((start.elapsed().as_secs_f64() * 10.0) as u64);
            }
        })
    };
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
        .context("cannot make a latency histogram")?;
    let mut lateness = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
        .context("cannot make a latency histogram")?;
    let (mut ok, mut errors, mut first_error) = (0u64, 0u64, None);
    for t in tasks {
        let (h, l, o, e, f) = t.await.context("a client task panicked")??;
        hist.add(&h).context("cannot merge latency histograms")?;
        lateness
            .add(&l)
            .context("cannot merge latency histograms")?;
        ok += o;
        errors += e;
        if first_error.is_none() {
            first_error = f;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    ticker.abort();
    bar.finish_and_clear();
    let learned_after = learned(&client, &url, &opts.model).await?;
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    Ok(Report {
        target_rate: opts.rate,
        connections: opts.connections,
        batch: opts.batch.max(1),
        requests: ok,
        errors,
        first_error,
        seconds,
        requests_per_second: ok as f64 / seconds,
        p50_ms: ms(0.5),
        p90_ms: ms(0.9),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: hist.max() as f64 / 1000.0,
        late_p50_ms: lateness.value_at_quantile(0.5) as f64 / 1000.0,
        late_p99_ms: lateness.value_at_quantile(0.99) as f64 / 1000.0,
        learned_per_second: learned_after.saturating_sub(learned_before) as f64 / seconds,
    })
}
