//! librdkafka's own log lines and error events in our logs, at their level,
//! and [`Logs`], the context of the clients that need nothing else (probes,
//! exports, replays, backfills, admin calls), which ignores statistics.
//!
//! One kind of line is not what it says: when librdkafka finds a group's
//! or a transaction's coordinator it moves that logical connection
//! (`GroupCoordinator`, `TxnCoordinator`) to the coordinator's address,
//! dropping the one it was authenticating, and logs the drop as "SASL
//! authentication error ... Local: Broker transport failure (after 0ms in
//! state DOWN)". On a SASL_SSL cluster every start printed a few of them at
//! ERROR while nothing was wrong. They go to debug; a real failure of the
//! broker is still logged by the broker's own connection, and a refused
//! password says "Authentication failed", not a transport failure.

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryResult, ProducerContext};

/// The context of a client that only logs.
#[derive(Debug, Default, Clone, Copy)]
pub struct Logs;

impl ClientContext for Logs {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        log_line(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        error_event("", &error, reason);
    }

    // rdkafka's default logs the whole statistics at info every interval
    // (a page a second) should a user set `statistics.interval.ms`; only
    // the loop's consumer reads them
    fn stats_raw(&self, _: &[u8]) {}
}

impl ConsumerContext for Logs {}

impl ProducerContext for Logs {
    type DeliveryOpaque = ();

    fn delivery(&self, _: &DeliveryResult<'_>, _: ()) {}
}

/// Logs one of librdkafka's log lines at its level (a coordinator's
/// dropped connection at debug).
pub fn log_line(level: RDKafkaLogLevel, fac: &str, message: &str) {
    if coordinator_moved(message) {
        tracing::debug!(target: "librdkafka", "{fac}: {message}");
        return;
    }
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => tracing::error!(target: "librdkafka", "{fac}: {message}"),
        RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", "{fac}: {message}"),
        _ => tracing::debug!(target: "librdkafka", "{fac}: {message}"),
    }
}

/// Logs an error event of a client (of `model`'s, if not empty): librdkafka
/// retries after these, so a warning (a coordinator's dropped connection
/// at debug).
pub fn error_event(model: &str, error: &KafkaError, reason: &str) {
    // a client of no model's has no `model` field
    let model = (!model.is_empty()).then_some(model);
    if coordinator_moved(reason) {
        tracing::debug!(model, %error, reason, "kafka client: a coordinator's connection moved");
    } else {
        tracing::warn!(model, %error, reason, "kafka client error (retrying)");
    }
}

/// True for the drop of a coordinator's connection as librdkafka moves it
/// (see the module's documentation).
pub fn coordinator_moved(text: &str) -> bool {
    // an error event's reason starts with the connection's name, a log
    // line has it after the thread's
    let coordinator = ["GroupCoordinator: ", "TxnCoordinator: "]
        .iter()
        .any(|c| text.starts_with(c))
        || ["]: GroupCoordinator: ", "]: TxnCoordinator: "]
            .iter()
            .any(|c| text.contains(c));
    coordinator
        && [
            "Local: Broker transport failure",
            "Local: Broker handle destroyed",
        ]
        .iter()
        .any(|t| text.contains(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_coordinators_dropped_connection_is_benign() {
        // as librdkafka logs them on a SASL_SSL start (log line, error event)
        for benign in [
            "[thrd:GroupCoordinator]: GroupCoordinator: SASL authentication error: SaslAuthenticateRequest failed: Local: Broker transport failure (after 0ms in state DOWN)",
            "GroupCoordinator: SASL SCRAM-SHA-512 mechanism handshake failed: Local: Broker transport failure: broker's supported mechanisms: (n/a) (after 0ms in state DOWN)",
            "[thrd:TxnCoordinator]: TxnCoordinator: SASL authentication error: SaslAuthenticateRequest failed: Local: Broker handle destroyed",
        ] {
            assert!(coordinator_moved(benign), "{benign}");
        }
        for real in [
            // a wrong password, on the coordinator as anywhere
            "[thrd:GroupCoordinator]: GroupCoordinator: SASL authentication error: Authentication failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512",
            // a broker's own connection dropping
            "[thrd:sasl_ssl://127.0.0.1:9192/bootstrap]: sasl_ssl://127.0.0.1:9192/1: SASL authentication error: SaslAuthenticateRequest failed: Local: Broker transport failure (after 0ms in state DOWN)",
            "127.0.0.1:9192/1: Connect to ipv4#127.0.0.1:9192 failed: Connection refused (after 0ms in state CONNECT)",
        ] {
            assert!(!coordinator_moved(real), "{real}");
        }
    }
}
