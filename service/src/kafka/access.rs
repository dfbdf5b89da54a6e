//! Whether this instance may use the cluster at all, and errors that name
//! the cause when it may not: a start-up check that fails fast on a wrong
//! password or an untrusted certificate (librdkafka itself only retries and
//! logs), and [`NotAuthorized`], the error a missing ACL becomes, naming
//! the topic, group or transactional id.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, Producer};

use super::base_config;

/// A Kafka call refused for want of an ACL.
#[derive(Debug, thiserror::Error)]
#[error("not authorized to {action} {resource} ({code}); grant the principal{principal} that ACL (`deploy/kafka/acls.py <config>` prints every ACL a config needs)")]
pub struct NotAuthorized {
    /// What was refused ("read topic", "join consumer group", ...).
    pub action: String,
    /// The topic, group or transactional id.
    pub resource: String,
    /// Kafka's error.
    pub code: RDKafkaErrorCode,
    /// `" User:<name>"` when known.
    pub principal: String,
}

impl NotAuthorized {
    /// The refusal of `action` on `resource`, for the config's principal.
    pub fn new(
        props: &BTreeMap<String, String>,
        action: &str,
        resource: &str,
        code: RDKafkaErrorCode,
    ) -> NotAuthorized {
        NotAuthorized {
            action: action.to_owned(),
            resource: resource.to_owned(),
            code,
            principal: props
                .get("sasl.username")
                .map(|u| format!(" User:{u}"))
                .unwrap_or_default(),
        }
    }
}

/// True for Kafka's authorization errors.
pub fn is_denial(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::GroupAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::TransactionalIdAuthorizationFailed
    )
}

/// The authorization error `e` carries, if any.
pub fn denial(e: &KafkaError) -> Option<RDKafkaErrorCode> {
    e.rdkafka_error_code().filter(|&c| is_denial(c))
}

/// The authorization error somewhere in `e`'s chain, if any.
pub fn denial_in(e: &anyhow::Error) -> Option<RDKafkaErrorCode> {
    e.chain()
        .filter_map(|c| c.downcast_ref::<KafkaError>())
        .find_map(denial)
}

/// Why the cluster cannot be used at all: the client's own errors, which
/// librdkafka reports through its context while it retries.
#[derive(Default)]
struct Watch {
    fatal: Mutex<Option<Fatal>>,
    last: Mutex<Option<String>>,
}

#[derive(Debug, Clone)]
enum Fatal {
    Authentication(String),
    Tls(String),
}

/// What librdkafka's error says, if it is one that retrying cannot mend.
fn fatal(error: &KafkaError, reason: &str) -> Option<Fatal> {
    fatal_text(error.rdkafka_error_code(), reason)
}

/// [`fatal`] from an error code, if there is one, and librdkafka's text.
fn fatal_text(code: Option<RDKafkaErrorCode>, reason: &str) -> Option<Fatal> {
    if super::logs::coordinator_moved(reason) {
        return None;
    }
    let lower = reason.to_ascii_lowercase();
    // not "SASL authentication error" alone: librdkafka also says it of a
    // connection that dropped during the handshake (a transport failure)
    if code == Some(RDKafkaErrorCode::Authentication) || lower.contains("authentication failed") {
        Some(Fatal::Authentication(reason.to_owned()))
    } else if code == Some(RDKafkaErrorCode::SSL) || lower.contains("certificate verify failed") {
        Some(Fatal::Tls(reason.to_owned()))
    } else {
        None
    }
}

impl rdkafka::producer::ProducerContext for Watch {
    type DeliveryOpaque = ();

    fn delivery(&self, _: &rdkafka::producer::DeliveryResult<'_>, _: ()) {}
}

impl Watch {
    fn note(&self, f: Fatal) {
        if let Ok(mut slot) = self.fatal.lock() {
            slot.get_or_insert(f);
        }
    }
}

/// The topic a transactional producer was refused, from librdkafka's log:
/// a refused write makes the transaction fail when its partitions are
/// added, before any delivery report (`ADDPARTS ... Failed to add
/// partition "TOPIC" [p] to transaction: Broker: Topic authorization
/// failed`).
pub fn refused_partition(fac: &str, message: &str) -> Option<String> {
    if fac != "ADDPARTS"
        || !message
            .to_ascii_lowercase()
            .contains("authorization failed")
    {
        return None;
    }
    message.split('"').nth(1).map(str::to_owned)
}

impl ClientContext for Watch {
    // librdkafka logs every failed connection at once, from its own
    // threads; its error events wait for a poll and are sometimes folded
    // into "all brokers down": both are watched
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        if let Some(f) = fatal_text(None, message) {
            self.note(f);
        }
        super::logs::log_line(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if let Some(f) = fatal(&error, reason) {
            self.note(f);
        }
        if let Ok(mut last) = self.last.lock() {
            *last = Some(format!("{error}: {reason}"));
        }
    }
}

/// Connects to the cluster as the config says and asks for its metadata:
/// an error naming the cause (authentication failed, certificate verify
/// failed, unreachable) within `timeout`, as soon as the cause is known.
pub fn check_connection(props: &BTreeMap<String, String>, timeout: Duration) -> Result<()> {
    // a producer: its poll hands librdkafka's error events, reason and
    // all, to the context (a consumer's returns the code alone)
    let client: BaseProducer<Watch> = base_config(props)
        .create_with_context(Watch::default())
        .context("cannot create a Kafka client; check the [kafka] properties")?;
    let servers = props
        .get("bootstrap.servers")
        .map_or("(no bootstrap.servers)", String::as_str);
    let deadline = Instant::now() + timeout;
    loop {
        let step =
            Duration::from_millis(500).min(deadline.saturating_duration_since(Instant::now()));
        let result = client.client().fetch_metadata(None, step);
        client.poll(Duration::ZERO);
        let ctx = client.context();
        if let Some(f) = ctx.fatal.lock().ok().and_then(|f| f.clone()) {
            match f {
                Fatal::Authentication(why) => bail!(
                    "Kafka authentication failed at {servers}: {why}; check `kafka.sasl.username`, `kafka.sasl.password` (STREAMFIT_KAFKA_SASL_PASSWORD) and `kafka.sasl.mechanisms`"
                ),
                Fatal::Tls(why) => bail!(
                    "TLS with the Kafka broker at {servers} failed (certificate verify failed or handshake refused): {why}; check that `kafka.ssl.ca.location` names the CA that signed the broker's certificate and that `kafka.security.protocol` matches the listener"
                ),
            }
        }
        match result {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                let last = ctx.last.lock().ok().and_then(|l| l.clone());
                bail!(
                    "cannot reach Kafka at {servers} within {timeout:?}: {}; is the broker up (deploy/kafka.sh up) and are `bootstrap.servers` and `security.protocol` right?",
                    last.unwrap_or_else(|| e.to_string())
                )
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn librdkafka_errors_that_retrying_cannot_mend_are_told_apart() {
        let auth = KafkaError::Global(RDKafkaErrorCode::Authentication);
        assert!(matches!(
            fatal(&auth, "SASL authentication error: Authentication failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512"),
            Some(Fatal::Authentication(_))
        ));
        let tls = KafkaError::Global(RDKafkaErrorCode::SSL);
        assert!(matches!(
            fatal(&tls, "ssl://127.0.0.1:9192/bootstrap: SSL handshake failed: error:0A000086:SSL routines::certificate verify failed"),
            Some(Fatal::Tls(_))
        ));
        let down = KafkaError::Global(RDKafkaErrorCode::AllBrokersDown);
        assert!(fatal(&down, "1/1 brokers are down").is_none());
        // seen on a good connection that dropped mid-handshake
        assert!(matches!(
            fatal_text(None, "sasl_ssl://127.0.0.1:9192/bootstrap: error:0A000086:SSL routines::certificate verify failed (after 5ms in state SSL_HANDSHAKE)"),
            Some(Fatal::Tls(_))
        ));
        let dropped = KafkaError::Global(RDKafkaErrorCode::BrokerTransportFailure);
        assert!(fatal(&dropped, "GroupCoordinator: SASL authentication error: SaslAuthenticateRequest failed: Local: Broker transport failure (after 0ms in state DOWN)").is_none());
    }

    #[test]
    fn a_refused_partition_is_read_from_the_log() {
        let line = "TxnCoordinator/1: Failed to add partition \"unwritable.out-1\" [2] to transaction: Broker: Topic authorization failed";
        assert_eq!(
            refused_partition("ADDPARTS", line).as_deref(),
            Some("unwritable.out-1")
        );
        assert_eq!(refused_partition("TXNERR", line), None);
        assert_eq!(
            refused_partition(
                "ADDPARTS",
                "Failed to add partition \"t\" [0] to transaction: Broker: Not coordinator"
            ),
            None
        );
    }

    #[test]
    fn a_denial_names_the_resource_and_the_principal() {
        let props = BTreeMap::from([("sasl.username".to_owned(), "streamfit".to_owned())]);
        let e = NotAuthorized::new(
            &props,
            "read topic",
            "waits.readings",
            RDKafkaErrorCode::TopicAuthorizationFailed,
        );
        let text = e.to_string();
        assert!(
            text.starts_with("not authorized to read topic waits.readings"),
            "{text}"
        );
        assert!(text.contains("User:streamfit"), "{text}");
        assert!(is_denial(RDKafkaErrorCode::GroupAuthorizationFailed));
        assert!(!is_denial(RDKafkaErrorCode::UnknownTopicOrPartition));
    }
}
