//! Whether a model's consumer group is free for an offline writer (a replay,
//! an import). A running service in the group would race the write.
//!
//! A service stopped gracefully leaves a static member behind (its
//! `group.instance.id`): the broker keeps it until its session times out,
//! 45 s by default, so that a restart gets its partitions back without a
//! rebalance. Every instance's consumer carries its HTTP URL in its client
//! id (`routing`), so such a member can be told from a running one: a
//! running service answers at its URL. The check refuses at once when a
//! member answers, and otherwise waits, saying why, until the broker has
//! dropped the members.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::config::Config;
use crate::kafka;
use crate::kafka::Logs;
use crate::routing::parse_client_id;

/// librdkafka's default `session.timeout.ms`.
const DEFAULT_SESSION_MS: u64 = 45_000;
/// How long a member's HTTP address gets to accept a connection.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// How often the wait says where it is.
const NOTE_EVERY: Duration = Duration::from_secs(5);

/// One member of the group, as the broker lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its client id.
    pub client_id: String,
    /// Its host, as the broker saw it.
    pub host: String,
}

/// What the members of a group say about it.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No member: go on.
    Idle,
    /// A member answers at its URL: a service is running.
    Running {
        /// The instance's name.
        instance: String,
        /// Where it answers.
        url: String,
    },
    /// Members whose service does not answer (stopped, their static
    /// membership not yet expired) or that are not ours (no URL to ask).
    Lingering(Vec<String>),
}

/// Judges `members`, asking `answers` whether a URL accepts connections.
pub fn judge(members: &[Member], answers: impl Fn(&str) -> bool) -> Verdict {
    if members.is_empty() {
        return Verdict::Idle;
    }
    let mut lingering = Vec::new();
    for m in members {
        match parse_client_id(&m.client_id) {
            Some((instance, url)) if answers(url) => {
                return Verdict::Running {
                    instance: instance.to_owned(),
                    url: url.to_owned(),
                }
            }
            Some((instance, url)) => {
                lingering.push(format!("{instance} at {url}, which does not answer"))
            }
            None => lingering.push(format!(
                "client {:?} on {} (not a streamfit service)",
                m.client_id, m.host
            )),
        }
    }
    Verdict::Lingering(lingering)
}

/// `host:port` of an `http(s)://host[:port][/...]` URL.
fn authority(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host_port = rest.split('/').next()?;
    if host_port.is_empty() {
        return None;
    }
    let has_port = host_port
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok());
    Some(if has_port {
        host_port.to_owned()
    } else if scheme == "https" {
        format!("{host_port}:443")
    } else {
        format!("{host_port}:80")
    })
}

/// True when something accepts a TCP connection at `url`'s address.
pub fn answers(url: &str) -> bool {
    let Some(addr) = authority(url) else {
        return false;
    };
    let Ok(addrs) = addr.to_socket_addrs() else {
        return false;
    };
    addrs
        .into_iter()
        .any(|a| TcpStream::connect_timeout(&a, PROBE_TIMEOUT).is_ok())
}

fn members(probe: &BaseConsumer<Logs>, group: &str) -> Option<Vec<Member>> {
    let list = probe
        .fetch_group_list(Some(group), Duration::from_secs(10))
        .ok()?;
    let g = list.groups().iter().find(|g| g.name() == group)?;
    Some(
        g.members()
            .iter()
            .map(|m| Member {
                client_id: m.client_id().to_owned(),
                host: m.client_host().to_owned(),
            })
            .collect(),
    )
}

/// Returns once `group` has no member; fails at once when a member's
/// service answers, or when members remain past their session timeout.
pub fn ensure_group_idle(config: &Config, group: &str, model: &str, what: &str) -> Result<()> {
    let probe: BaseConsumer<Logs> = kafka::plain_consumer_config(&config.kafka, group)
        .create_with_context(Logs)
        .context("cannot create a Kafka consumer; check the [kafka] properties")?;
    let session_ms = config
        .kafka
        .get("session.timeout.ms")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(DEFAULT_SESSION_MS);
    let started = Instant::now();
    let limit = Duration::from_millis(session_ms) + Duration::from_secs(15);
    let mut noted: Option<Instant> = None;
    loop {
        // a group the broker cannot list is not known to be busy
        let found = members(&probe, group).unwrap_or_default();
        match judge(&found, answers) {
            Verdict::Idle => {
                if noted.is_some() {
                    tracing::info!(%group, waited_s = started.elapsed().as_secs(), "the stopped service's membership has expired; going on");
                }
                return Ok(());
            }
            Verdict::Running { instance, url } => bail!(
                "consumer group {group} has a running member: instance {instance} answers at {url}; stop the service for model {model} (SIGTERM, or `deploy/quickstart.sh stop`) before {what}"
            ),
            Verdict::Lingering(who) => {
                let waited = started.elapsed();
                if waited >= limit {
                    bail!(
                        "consumer group {group} still has {} member(s) after {} s ({}): stop every consumer of the group for model {model} before {what}",
                        who.len(),
                        waited.as_secs(),
                        who.join("; ")
                    );
                }
                if noted.is_none_or(|t| t.elapsed() >= NOTE_EVERY) {
                    tracing::warn!(
                        "consumer group {group} still lists {} member(s) ({}): a stopped service stays a member until its session times out (session.timeout.ms = {session_ms}); waiting up to {} s more",
                        who.len(),
                        who.join("; "),
                        limit.saturating_sub(waited).as_secs()
                    );
                    noted = Some(Instant::now());
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str) -> Member {
        Member {
            client_id: id.to_owned(),
            host: "/127.0.0.1".to_owned(),
        }
    }

    #[test]
    fn a_member_that_answers_is_a_running_service() {
        let ms = [
            member("streamfit|a|http://127.0.0.1:1"),
            member("streamfit|b|http://127.0.0.1:2"),
        ];
        assert_eq!(
            judge(&ms, |u| u.ends_with(":2")),
            Verdict::Running {
                instance: "b".into(),
                url: "http://127.0.0.1:2".into()
            }
        );
    }

    #[test]
    fn silent_and_foreign_members_linger_and_no_member_is_idle() {
        let ms = [member("streamfit|a|http://127.0.0.1:1"), member("rdkafka")];
        match judge(&ms, |_| false) {
            Verdict::Lingering(who) => {
                assert_eq!(who.len(), 2);
                assert!(who[0].contains("does not answer"), "{who:?}");
                assert!(who[1].contains("not a streamfit service"), "{who:?}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(judge(&[], |_| true), Verdict::Idle);
    }

    #[test]
    fn urls_give_their_address() {
        assert_eq!(
            authority("http://127.0.0.1:8080").as_deref(),
            Some("127.0.0.1:8080")
        );
        assert_eq!(
            authority("https://svc.example/x").as_deref(),
            Some("svc.example:443")
        );
        assert_eq!(authority("http://h").as_deref(), Some("h:80"));
        assert_eq!(authority("nonsense"), None);
    }

    #[test]
    fn a_listening_socket_answers_and_a_closed_one_does_not() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        assert!(answers(&format!("http://127.0.0.1:{port}")));
        drop(l);
        assert!(!answers(&format!("http://127.0.0.1:{port}")));
    }
}
