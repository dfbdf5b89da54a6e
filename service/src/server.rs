//! `streamfit run`: topics, one worker thread per model, the HTTP API, and
//! a shutdown that drains the current batches, flushes and commits.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::engine::{self, ModelHandle};
use crate::http::{app, AppState};
use crate::kafka::Logs;

/// Runs the service until `shutdown` trips or a task fails.
pub async fn run(mut config: Config, shutdown: CancellationToken) -> Result<()> {
    // the HTTP API's TLS and tokens first: a bad file stops the start
    // before anything touches Kafka; the tokens leave the config here, only
    // their digests are kept
    let http = &config.http;
    let tls = match (&http.tls_cert, &http.tls_key) {
        (Some(cert), Some(key)) => Some(crate::http::serve::tls_acceptor(cert, key)?),
        _ => None,
    };
    let tokens = Arc::new(crate::http::Tokens::load(
        http.tokens_file.as_deref(),
        http.tokens.as_deref(),
        &http.open_paths,
    )?);
    config.http.tokens = None;
    // secure by default: an address other hosts reach needs tokens (an
    // empty tokens file is no token), unless the config says otherwise;
    // checked here, where HTTP is served, not for every command
    if tokens.is_empty()
        && !config.http.allow_unauthenticated
        && !crate::config::is_loopback(&config.service.http_addr)
    {
        anyhow::bail!(
            "`service.http_addr` {} can be reached from other hosts, but no token is configured{}: set `http.tokens_file` (lines `predict TOKEN` / `admin TOKEN`) or STREAMFIT_HTTP_TOKENS so that only holders of a token can predict, read state or start a backfill, or set `http.allow_unauthenticated = true` to serve it open",
            config.service.http_addr,
            if config.http.tokens_file.is_some() {
                " (`http.tokens_file` holds no token)"
            } else {
                ""
            }
        );
    }
    let peer_ca = match &config.http.peer_ca {
        Some(path) => {
            let pem = std::fs::read(path)
                .with_context(|| format!("cannot read `http.peer_ca` {}", path.display()))?;
            Some(reqwest::Certificate::from_pem(&pem).with_context(|| {
                format!("`http.peer_ca` {} is not a PEM certificate", path.display())
            })?)
        }
        None => None,
    };
    if tokens.is_empty() {
        // loopback-only without tokens is the default; an open address
        // without them was asked for (`http.allow_unauthenticated`)
        if config.http.allow_unauthenticated {
            tracing::warn!(addr = %config.service.http_addr, "the HTTP API has no tokens: anyone who reaches it may read state and start backfills (`http.tokens_file`)");
        } else {
            tracing::info!(addr = %config.service.http_addr, "the HTTP API has no tokens (loopback only)");
        }
    }
    let guard = Arc::new(crate::http::Guard::new(
        config.http.max_in_flight,
        Duration::from_millis(config.http.request_timeout_ms),
        config.service.max_body_bytes,
    ));
    // bound first: the instance's default name and its advertised URL
    // carry the port it really listens on (port 0 picks one)
    let listener = tokio::net::TcpListener::bind(&config.service.http_addr)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (`service.http_addr`)",
                config.service.http_addr
            )
        })?;
    config.service.http_addr = listener.local_addr()?.to_string();
    if tls.is_some() && config.service.advertised_url.is_none() {
        // other instances forward /predict here over HTTPS
        let plain = config.service.advertised();
        config.service.advertised_url = Some(plain.replacen("http://", "https://", 1));
    }
    let config = Arc::new(config);
    tracing::info!(addr = %config.service.http_addr, tls = tls.is_some(), tokens = !tokens.is_empty(), instance = %config.service.instance(), advertised = %config.service.advertised(), "http listening");
    // a wrong password or an untrusted certificate stops the start here,
    // named, instead of librdkafka retrying it forever
    let props = config.kafka.clone();
    tokio::task::spawn_blocking(move || {
        crate::kafka::access::check_connection(&props, Duration::from_secs(30))
    })
    .await
    .context("the Kafka connection check panicked")??;
    let handles: Vec<Arc<ModelHandle>> = config
        .models
        .iter()
        .map(|m| ModelHandle::new(m.clone()).map(Arc::new))
        .collect::<Result<_>>()?;
    // a model whose topics this principal may not use stops alone (named in
    // /readyz and the log); the others run
    for h in &handles {
        if let Err(e) = prepare_model_topics(&config, &h.config).await {
            if !refused(h, &e) {
                return Err(e);
            }
        }
    }

    let mut workers = Vec::new();
    for h in handles.iter().filter(|h| h.failure().is_none()) {
        let (config, h, cancel) = (config.clone(), h.clone(), shutdown.clone());
        let name = h.config.name.clone();
        workers.push(
            std::thread::Builder::new()
                .name(format!("model-{name}"))
                .spawn(move || {
                    let _guard = CancelOnPanic {
                        cancel: cancel.clone(),
                        model: name.clone(),
                    };
                    let r = engine::run(&config, &h, &cancel);
                    if let Err(e) = &r {
                        if refused(&h, e) {
                            return Ok(());
                        }
                        tracing::error!(model = %name, error = %format!("{e:#}"), "worker failed; stopping the service");
                        cancel.cancel();
                    }
                    r.with_context(|| format!("model {name}"))
                })
                .context("cannot start a worker thread")?,
        );
    }
    crate::memory::spawn_trimmer(
        Duration::from_millis(config.service.memory_trim_interval_ms),
        shutdown.clone(),
    );
    tokio::spawn(refresh_directories(
        config.clone(),
        handles.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(sample_histories(handles.clone(), shutdown.clone()));
    let mut state = AppState::new(handles, &config.service);
    state.tokens_required = !tokens.is_empty();
    if let Some(ca) = peer_ca {
        state = state.with_peer_ca(ca)?;
    }
    let max_body = config.service.max_body_bytes;
    let router = crate::http::secured(app(state, max_body), tokens, guard);
    let limits = crate::http::serve::Limits {
        header_timeout: Duration::from_millis(config.http.header_timeout_ms),
        max_connections: config.http.max_connections,
    };
    let http = tokio::spawn(crate::http::serve::serve(
        listener,
        router,
        tls,
        limits,
        shutdown.clone(),
    ));
    shutdown.cancelled().await;
    tracing::info!("shutting down: finishing batches, flushing, committing");
    let mut first_err = None;
    // the workers give up on the broker after `shutdown_timeout_ms`; this
    // bound holds whatever they are blocked in
    let limit = Duration::from_millis(config.service.shutdown_timeout_ms) + Duration::from_secs(5);
    let deadline = tokio::time::Instant::now() + limit;
    for w in workers {
        let r =
            tokio::time::timeout_at(deadline, tokio::task::spawn_blocking(move || w.join())).await;
        match r {
            Ok(Ok(Ok(Ok(())))) => {}
            Ok(Ok(Ok(Err(e)))) => {
                first_err.get_or_insert(e);
            }
            Ok(Ok(Err(_)) | Err(_)) => {
                first_err.get_or_insert(anyhow::anyhow!(
                    "a worker thread panicked (see the log above); readings not committed will be processed again at restart"
                ));
            }
            Err(_) => {
                first_err.get_or_insert(anyhow::anyhow!(
                    "the workers did not stop within {limit:?} (`service.shutdown_timeout_ms` + 5 s); exiting without their last commit, the readings it covered will be processed again at restart"
                ));
                break;
            }
        }
    }
    match tokio::time::timeout(Duration::from_secs(10), http).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => {
            tracing::warn!(error = %format!("{e:#}"), "http server stopped with an error")
        }
        _ => tracing::warn!("http server did not stop in time"),
    }
    first_err.map_or(Ok(()), Err)
}

/// Creates a model's missing topics (with `topics.create`) and prepares
/// its checkpoint topic (exactly once).
async fn prepare_model_topics(config: &Config, m: &crate::config::ModelConfig) -> Result<()> {
    if config.topics.create {
        let mut topics = vec![
            m.input_topic()?.to_owned(),
            m.output_topic(),
            m.dead_letter_topic(),
        ];
        topics.extend(m.events_topic());
        topics.extend(m.labels_topic.clone());
        crate::kafka::ensure_configured_topics(config, &topics).await?;
    }
    if config.service.exactly_once {
        let topic = config.service.checkpoint_topic(&m.name);
        crate::checkpoint::prepare_topic(config, &topic).await?;
    }
    Ok(())
}

/// True (and the model marked failed, with the reason logged) when `e` is
/// a refusal by the cluster's ACLs: that model stops, the service goes on.
fn refused(h: &ModelHandle, e: &anyhow::Error) -> bool {
    let named = e
        .chain()
        .any(|c| c.is::<crate::kafka::access::NotAuthorized>());
    if !named && crate::kafka::access::denial_in(e).is_none() {
        return false;
    }
    let why = format!("{e:#}");
    tracing::error!(model = %h.config.name, error = %why, "the cluster refuses this model's access; it stops, the other models go on (/readyz answers 503 until the ACL is granted and the service restarted)");
    h.fail(why);
    true
}

/// Trips the service's token if a worker thread panics, so that the process
/// stops (non-zero) instead of serving a model nobody updates.
struct CancelOnPanic {
    cancel: CancellationToken,
    model: String,
}

impl Drop for CancelOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            tracing::error!(model = %self.model, "worker thread panicked; stopping the service");
            self.cancel.cancel();
        }
    }
}

/// Samples every model's counters, lag and rolling metrics once a second
/// for the dashboard (off the async workers: merging the partitions'
/// metrics copies them).
async fn sample_histories(handles: Vec<Arc<ModelHandle>>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let hs = handles.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let now = crate::live::now_ms();
            for h in &hs {
                h.history.sample(now, &h.live.load(), &h.stats, h.lag());
            }
        })
        .await;
    }
}

/// Keeps each model's directory (which instance owns which partition)
/// fresh, once a second, off the async workers.
async fn refresh_directories(
    config: Arc<Config>,
    handles: Vec<Arc<ModelHandle>>,
    shutdown: CancellationToken,
) {
    let client: rdkafka::consumer::BaseConsumer<Logs> = match crate::kafka::base_config(
        &config.kafka,
    )
    .create_with_context(Logs)
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot create the directory reader; /predict answers locally only");
            return;
        }
    };
    let client = Arc::new(client);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        for h in &handles {
            let Ok(topic) = h.config.input_topic() else {
                continue;
            };
            let (topic, group) = (
                topic.to_owned(),
                format!("{}.{}", config.service.group_id, h.config.name),
            );
            let c = client.clone();
            let read = tokio::task::spawn_blocking(move || {
                crate::routing::Directory::read(&c, &group, &topic, Duration::from_secs(5))
            })
            .await;
            match read {
                Ok(Ok(d)) => h.directory.store(Arc::new(d)),
                Ok(Err(e)) => {
                    tracing::debug!(model = %h.config.name, error = %format!("{e:#}"), "directory not refreshed")
                }
                Err(_) => {}
            }
        }
    }
}

/// A token tripped by SIGINT or SIGTERM.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => {},
            _ = term => {},
        }
        tracing::info!("signal received");
        t.cancel();
    });
    token
}
