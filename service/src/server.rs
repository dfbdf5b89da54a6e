//! `streamfit run`: topics, one worker thread per model, the HTTP API, and
//! a shutdown that drains the current batches, flushes and commits.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::http::{app, AppState};
use crate::worker::{self, ModelHandle};

/// Runs the service until `shutdown` trips or a task fails.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<()> {
    let config = Arc::new(config);
    if config.topics.create {
        let mut topics = Vec::new();
        for m in &config.models {
            topics.push(m.input_topic()?.to_owned());
            topics.push(m.output_topic());
            topics.push(m.dead_letter_topic());
        }
        topics.sort();
        topics.dedup();
        crate::kafka::ensure_topics(
            &config.kafka,
            &topics,
            config.topics.partitions,
            config.topics.replication_factor,
        )
        .await?;
        if config.service.exactly_once {
            crate::checkpoint::ensure_topic(
                &config.kafka,
                &config.service.checkpoint_topic,
                config.topics.replication_factor,
            )
            .await?;
        }
    }
    let handles: Vec<Arc<ModelHandle>> = config
        .models
        .iter()
        .map(|m| ModelHandle::new(m.clone()).map(Arc::new))
        .collect::<Result<_>>()?;
    let listener = tokio::net::TcpListener::bind(&config.service.http_addr)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (`service.http_addr`)",
                config.service.http_addr
            )
        })?;
    tracing::info!(addr = %listener.local_addr()?, "http listening");

    let mut workers = Vec::new();
    for h in &handles {
        let (config, h, cancel) = (config.clone(), h.clone(), shutdown.clone());
        let name = h.config.name.clone();
        workers.push(
            std::thread::Builder::new()
                .name(format!("model-{name}"))
                .spawn(move || {
                    let r = worker::run(&config, &h, &cancel);
                    if let Err(e) = &r {
                        tracing::error!(model = %name, error = %format!("{e:#}"), "worker failed; stopping the service");
                        cancel.cancel();
                    }
                    r.with_context(|| format!("model {name}"))
                })
                .context("cannot start a worker thread")?,
        );
    }
    let state = AppState {
        models: Arc::new(handles),
    };
    let http_cancel = shutdown.clone();
    let http = tokio::spawn(async move {
        axum::serve(listener, app(state, config.service.max_body_bytes))
            .with_graceful_shutdown(async move { http_cancel.cancelled().await })
            .await
    });
    shutdown.cancelled().await;
    tracing::info!("shutting down: finishing batches, flushing, committing");
    let mut first_err = None;
    for w in workers {
        let r = tokio::task::spawn_blocking(move || w.join()).await;
        match r {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => {
                first_err.get_or_insert(e);
            }
            Ok(Err(_)) | Err(_) => {
                first_err.get_or_insert(anyhow::anyhow!("a worker thread panicked"));
            }
        }
    }
    match tokio::time::timeout(Duration::from_secs(10), http).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "http server stopped with an error"),
        _ => tracing::warn!("http server did not stop in time"),
    }
    first_err.map_or(Ok(()), Err)
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
