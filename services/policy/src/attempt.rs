//! One RCPT request as the event the greylist decides on, and the key it
//! is produced under: the per-request work of the policy server besides
//! Kafka (public so that `mailfleet bench hot` can profile it).

use std::net::IpAddr;

use mailfleet_events::{
    greylist::{
        triplet::{client_net, triplet as triplet_of, Grouping},
        DeliveryAttempted,
    },
    Envelope,
};

use crate::{protocol::Request, PolicyConfig};

/// The `DeliveryAttempted` for a request: a fresh random event id, the
/// wall clock as event time (or `policy_test_time` where the config
/// accepts it), and the attributes the greylist reads.
pub fn attempt(cfg: &PolicyConfig, req: &Request) -> DeliveryAttempted {
    let get = |k: &str| req.get(k).cloned();
    let (id, now_ms) = identity(cfg, req);
    DeliveryAttempted {
        envelope: Envelope::new(id, now_ms, format!("policy@{}", cfg.host)),
        client_address: get("client_address"),
        client_name: get("client_name"),
        reverse_client_name: get("reverse_client_name"),
        helo_name: get("helo_name"),
        sender: get("sender"),
        recipient: get("recipient"),
        instance: get("instance"),
        size: req.get("size").and_then(|s| s.parse().ok()),
        queue_id: get("queue_id").filter(|q| !q.is_empty()),
        policy_host: cfg.host.clone(),
        answered: None,
    }
}

/// A new attempt's event id (this host and 128 random bits) and event
/// time: the wall clock, or `policy_test_time` where the config accepts it.
pub fn identity(cfg: &PolicyConfig, req: &Request) -> (String, i64) {
    let test_time = req
        .get("policy_test_time")
        .filter(|_| cfg.accept_test_time)
        .and_then(|t| t.parse::<i64>().ok())
        .map(|secs| secs * 1000);
    let now_ms = test_time.unwrap_or_else(|| cfg.clock.now_ms());
    (
        format!("{}:{:032x}", cfg.host, rand::random::<u128>()),
        now_ms,
    )
}

/// The Kafka key of an attempt: its client network, as the greylist's
/// state is partitioned (empty without a parseable address).
pub fn key(attempt: &DeliveryAttempted, grouping: Grouping) -> String {
    attempt
        .client_address
        .as_deref()
        .and_then(|a| a.parse::<IpAddr>().ok())
        .map(|ip| client_net(ip, grouping))
        .unwrap_or_default()
}

/// The triplet the greylist looks up for this attempt; `None` without the
/// attributes it needs (it then lets the attempt through unlooked).
pub fn triplet(attempt: &DeliveryAttempted, grouping: Grouping) -> Option<String> {
    let ip = attempt.client_address.as_deref()?.parse::<IpAddr>().ok()?;
    attempt.client_name.as_ref()?;
    let (sender, rcpt) = (attempt.sender.as_deref()?, attempt.recipient.as_deref()?);
    Some(triplet_of(&client_net(ip, grouping), sender, rcpt))
}
