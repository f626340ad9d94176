//! The greylist decider: postgrey 1.37's `smtpd_access_policy` as a pure
//! function of state and event, with the event's time as "now".

use std::{net::IpAddr, sync::Arc};

use mailfleet_events::{
    clock::ClockTicked,
    config::ConfigChanged,
    greylist::{
        triplet::{client_net, triplet},
        DeliveryAttempted, GreylistDecided, GreylistReason, GreylistVerdict,
    },
    Envelope,
};
use mailfleet_runtime::{
    settings::{InForce, Settings},
    Consumer, Decision, Input, StateError, StateView,
};

use crate::{
    date::rfc2822_utc,
    state::{Awl, AwlKey, InstanceKey, Seen, TripletKey},
    whitelist::{WhitelistFiles, Whitelists},
    GreylistConfig, GreylistError, GreylistRules, RecordedLists,
};

mailfleet_runtime::inputs! {
    /// What the greylist consumer reads from `smtp.attempts`.
    pub enum GreylistInput {
        Attempt(DeliveryAttempted),
        Tick(ClockTicked),
        /// The settings in force from here on.
        Config(ConfigChanged),
    }
}

/// The consumer's name, also in `ConfigChanged.consumer`.
pub const NAME: &str = "greylist";

/// The answer to one attempt, before it becomes an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub verdict: GreylistVerdict,
    pub reason: GreylistReason,
    pub action: String,
    pub delay_seconds: i64,
    pub triplet: Option<String>,
}

impl Answer {
    fn dunno(reason: GreylistReason, triplet: Option<String>) -> Self {
        Self {
            verdict: GreylistVerdict::Pass,
            reason,
            action: "DUNNO".into(),
            delay_seconds: 0,
            triplet,
        }
    }
}

/// The greylist consumer.
/// The settings a greylist decision is made with.
#[derive(Debug, Clone)]
pub struct GreylistInForce {
    pub config: GreylistConfig,
    /// Recorded whitelists; `None`: the live files' (settings recorded
    /// without them, or the config file's before any `ConfigChanged`).
    pub lists: Option<Arc<Whitelists>>,
}

/// The settings `config` and the whitelist files give, as a
/// `ConfigChanged` records them (the files' texts included).
pub fn settings_of(
    config: &GreylistConfig,
    files: &WhitelistFiles,
) -> Result<Settings, GreylistError> {
    let mut rules = config.rules();
    let (clients, recipients) = files.texts()?;
    rules.whitelists = Some(RecordedLists {
        clients,
        recipients,
    });
    Ok(Settings::of(&rules)?)
}

pub struct Greylist {
    /// The config file's settings until a `ConfigChanged`, then the log's.
    in_force: InForce<GreylistInForce>,
    whitelists: Arc<WhitelistFiles>,
    decisions_topic: String,
}

const HOUR: i64 = 3600;
const INSTANCE_TTL: i64 = 86_400;

impl Greylist {
    pub fn new(
        config: GreylistConfig,
        whitelists: Arc<WhitelistFiles>,
        decisions_topic: impl Into<String>,
    ) -> Self {
        Self {
            in_force: InForce::new(
                NAME,
                GreylistInForce {
                    config,
                    lists: None,
                },
            ),
            whitelists,
            decisions_topic: decisions_topic.into(),
        }
    }

    /// The settings this config file gives, as a `ConfigChanged` records them.
    pub fn settings(&self) -> Result<Settings, GreylistError> {
        settings_of(&self.in_force.file().config, &self.whitelists)
    }

    /// The config in force in this partition and its settings hash.
    pub fn config_in_force(
        &self,
        state: &StateView<'_>,
    ) -> Result<(Arc<GreylistInForce>, Option<String>), StateError> {
        self.in_force.get(state, |s| self.build(s))
    }

    /// What recorded settings give, if they are valid.
    fn build(&self, settings: &Settings) -> Result<GreylistInForce, GreylistError> {
        let rules: GreylistRules =
            serde_json::from_str(&settings.json).map_err(GreylistError::ReadRules)?;
        let lists = match &rules.whitelists {
            Some(l) => Some(Arc::new(Whitelists::from_texts(&l.clients, &l.recipients)?)),
            None => None,
        };
        let config = self.in_force.file().config.with_rules(rules);
        let problems = config.problems();
        if problems.is_empty() {
            Ok(GreylistInForce { config, lists })
        } else {
            Err(GreylistError::InvalidRules(problems))
        }
    }

    /// Take a `ConfigChanged` for this consumer into force.
    fn take_settings(
        &self,
        state: &StateView<'_>,
        c: &ConfigChanged,
    ) -> Result<Decision, StateError> {
        self.in_force.take(state, c, |s| self.build(s))
    }

    /// Judge one attempt at `now` (seconds), recording state changes in `d`.
    pub fn judge(
        &self,
        state: &StateView<'_>,
        a: &DeliveryAttempted,
        now: i64,
        d: &mut Decision,
    ) -> Result<Answer, StateError> {
        let (in_force, _) = self.config_in_force(state)?;
        self.judge_with(&in_force, state, a, now, d)
    }

    /// [`Greylist::judge`] with the settings in force already looked up:
    /// postgrey's steps in its order. An attempt without the attributes,
    /// or from a whitelisted client or to a whitelisted recipient, is let
    /// through; then the client's auto-whitelist, then the triplet's
    /// history decides.
    fn judge_with(
        &self,
        in_force: &GreylistInForce,
        state: &StateView<'_>,
        a: &DeliveryAttempted,
        now: i64,
        d: &mut Decision,
    ) -> Result<Answer, StateError> {
        let c = &in_force.config;
        let (Some(addr), Some(name), Some(rcpt), Some(sender)) =
            (&a.client_address, &a.client_name, &a.recipient, &a.sender)
        else {
            return Ok(Answer::dunno(GreylistReason::MissingAttributes, None));
        };
        let Ok(ip) = addr.parse::<IpAddr>() else {
            return Ok(Answer::dunno(GreylistReason::MissingAttributes, None));
        };
        if let Some(reason) = self.whitelisted(in_force, ip, name, rcpt) {
            return Ok(Answer::dunno(reason, None));
        }
        let awl_key = AwlKey(ip.to_string());
        let awl = if c.auto_whitelist_clients > 0 {
            state.get(&awl_key)?
        } else {
            None
        };
        if let Some(awl) = awl.filter(|w| w.count >= c.auto_whitelist_clients) {
            refresh_awl(&awl_key, awl, now, d);
            return Ok(Answer::dunno(GreylistReason::AutoWhitelisted, None));
        }

        let key = triplet(&client_net(ip, c.grouping()), sender, rcpt);
        let history = record_attempt(c, state, &key, now, d)?;
        let diff = c.delay_s - (now - history.first);
        if c.auto_whitelist_clients > 0
            && diff <= 0
            && !history.passed_before
            && awl.is_none_or(|w| now >= w.last + HOUR)
        {
            let count = awl.map_or(0, |w| w.count) + 1;
            d.put(&awl_key, &Awl { count, last: now });
        }
        if diff > 0 {
            return Ok(defer(c, rcpt, &history, now, diff, key));
        }
        if !history.passed_before && self.new_instance(state, a.instance.as_deref(), now, d)? {
            return Ok(pass(c, now - history.first, now, key));
        }
        Ok(Answer::dunno(GreylistReason::Passed, Some(key)))
    }

    /// Why a whitelist lets this attempt through, if one does: the client
    /// (address or name) first, then the recipient.
    fn whitelisted(
        &self,
        in_force: &GreylistInForce,
        ip: IpAddr,
        name: &str,
        rcpt: &str,
    ) -> Option<GreylistReason> {
        let lists = in_force
            .lists
            .clone()
            .unwrap_or_else(|| self.whitelists.get());
        if lists.client(Some(ip), name) {
            return Some(GreylistReason::WhitelistedClient);
        }
        if lists.recipient(rcpt) {
            return Some(GreylistReason::WhitelistedRecipient);
        }
        None
    }

    /// One header per message: a recipient of an instance already given
    /// the header gets DUNNO.
    fn new_instance(
        &self,
        state: &StateView<'_>,
        instance: Option<&str>,
        now: i64,
        d: &mut Decision,
    ) -> Result<bool, StateError> {
        let Some(instance) = instance else {
            return Ok(true);
        };
        let key = InstanceKey(instance.to_string());
        if state.get(&key)?.is_some() {
            return Ok(false);
        }
        d.put(&key, &now);
        Ok(true)
    }

    /// Forget what postgrey's nightly clean-up forgets, at the tick's time.
    pub fn sweep(
        &self,
        state: &StateView<'_>,
        now: i64,
        d: &mut Decision,
    ) -> Result<usize, StateError> {
        let (in_force, _) = self.config_in_force(state)?;
        let c = &in_force.config;
        let max_age = c.max_age_days * 86_400;
        let mut removed = 0;
        for (key, seen) in state.scan::<TripletKey>()? {
            let never_passed = seen.last - seen.first < c.delay_s;
            if now - seen.last > max_age || (never_passed && now - seen.last > c.retry_window_s) {
                d.delete(&TripletKey(String::from_utf8_lossy(&key).into_owned()));
                removed += 1;
            }
        }
        for (key, awl) in state.scan::<AwlKey>()? {
            if now - awl.last > max_age {
                d.delete(&AwlKey(String::from_utf8_lossy(&key).into_owned()));
                removed += 1;
            }
        }
        for (key, seen) in state.scan::<InstanceKey>()? {
            if now - seen > INSTANCE_TTL {
                d.delete(&InstanceKey(String::from_utf8_lossy(&key).into_owned()));
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// A whitelisted client's pass counts again once an hour (or when the
/// clock went back).
fn refresh_awl(key: &AwlKey, awl: Awl, now: i64, d: &mut Decision) {
    if now >= awl.last + HOUR || awl.last > now {
        d.put(
            key,
            &Awl {
                count: awl.count + 1,
                last: now,
            },
        );
    }
}

/// What a triplet's history says of one attempt.
struct History {
    /// When the triplet's current wait started, seconds.
    first: i64,
    /// It had waited out the delay before this attempt.
    passed_before: bool,
    /// Its retry window had expired, so the wait starts again now.
    restarted: bool,
}

/// Read the triplet's history and record this attempt in it.
fn record_attempt(
    c: &GreylistConfig,
    state: &StateView<'_>,
    key: &str,
    now: i64,
    d: &mut Decision,
) -> Result<History, StateError> {
    let tkey = TripletKey(key.to_string());
    let (mut first, mut passed_before, mut restarted) = (now, false, false);
    if let Some(seen) = state.get(&tkey)? {
        first = seen.first;
        passed_before = seen.last - seen.first >= c.delay_s;
        if !passed_before && now - first > c.retry_window_s {
            (first, restarted) = (now, true);
        }
        first = first.min(now);
    }
    d.put(&tkey, &Seen { first, last: now });
    Ok(History {
        first,
        passed_before,
        restarted,
    })
}

/// The deferral, `diff` seconds before the triplet may pass.
fn defer(
    c: &GreylistConfig,
    rcpt: &str,
    history: &History,
    now: i64,
    diff: i64,
    key: String,
) -> Answer {
    let reason = match (now == history.first, history.restarted) {
        (true, true) => GreylistReason::RetryWindowExpired,
        (true, false) => GreylistReason::New,
        (false, _) => GreylistReason::TooEarly,
    };
    let domain = rcpt.rsplit_once('@').map_or(rcpt, |(_, d)| d);
    let text = c
        .greylist_text
        .replace("%s", &diff.to_string())
        .replace("%r", domain);
    Answer {
        verdict: GreylistVerdict::Defer,
        reason,
        action: format!("{} {text}", c.greylist_action),
        delay_seconds: diff,
        triplet: Some(key),
    }
}

/// The first pass of a message, `delay` seconds after its triplet's wait
/// started: the answer prepends the X-Greylist header.
fn pass(c: &GreylistConfig, delay: i64, now: i64, key: String) -> Answer {
    let header = c
        .x_greylist_header
        .replace("%t", &delay.to_string())
        .replace("%h", &c.hostname)
        .replace("%v", env!("CARGO_PKG_VERSION"))
        .replace("%d", &rfc2822_utc(now));
    Answer {
        verdict: GreylistVerdict::Pass,
        reason: GreylistReason::Passed,
        action: format!("PREPEND {header}"),
        delay_seconds: delay,
        triplet: Some(key),
    }
}

/// The greylist's prefetch: 10,000 records or 4 MiB per partition, about a
/// second of work at ~9 µs a decision (with the runtime's 10 ms
/// `fetch.queue.backoff.ms`, the queue is topped up long before it runs
/// dry). librdkafka's defaults (100,000 and 64 MiB) held ~240 MB of queued
/// records in a consumer catching up on 12 partitions, more than its
/// state's cache and memtables together (docs/benchmarks.md, state size).
/// A fetch is bounded to match: librdkafka's defaults let one fetch
/// response carry 1 MiB per partition up to 50 MiB, held with its
/// decompressed batches until the last record of it is consumed, which
/// added 30 MB spikes to a catching-up consumer's RSS (275 MB peak at
/// 10M triplets against 243 MB with 2 MiB fetches, at the same speed).
/// Nagle off: a policy request waits on this consumer's fetch, which must
/// not wait for the ACK of an earlier request on the same connection.
pub const PREFETCH: &[(&str, &str)] = &[
    ("queued.min.messages", "10000"),
    ("queued.max.messages.kbytes", "4096"),
    ("fetch.max.bytes", "2097152"),
    ("max.partition.fetch.bytes", "262144"),
    ("socket.nagle.disable", "true"),
];

impl Consumer for Greylist {
    type Event = GreylistInput;

    fn name(&self) -> &str {
        NAME
    }

    fn client_defaults(&self) -> &'static [(&'static str, &'static str)] {
        PREFETCH
    }

    fn decide(
        &self,
        state: &StateView<'_>,
        input: &Input<GreylistInput>,
    ) -> Result<Decision, StateError> {
        let mut d = Decision::apply();
        match &input.event {
            GreylistInput::Tick(tick) => {
                self.sweep(state, tick.envelope.event_time.div_euclid(1000), &mut d)?;
            }
            GreylistInput::Config(c) => return self.take_settings(state, c),
            GreylistInput::Attempt(a) => {
                let (in_force, settings_hash) = self.config_in_force(state)?;
                let answer = self.judge_with(
                    &in_force,
                    state,
                    a,
                    a.envelope.event_time.div_euclid(1000),
                    &mut d,
                )?;
                metrics::counter!(mailfleet_runtime::metrics::GREYLIST_DECISIONS,
                    "verdict" => verdict_label(answer.verdict),
                    "reason" => reason_label(answer.reason))
                .increment(1);
                if let Some(given) = a.answered.as_deref().filter(|g| *g != answer.action) {
                    // The policy server answered a repeat at once; the
                    // rules give another action (docs/greylisting.md).
                    metrics::counter!(mailfleet_runtime::metrics::GREYLIST_ANSWERED_DIFFERENTLY)
                        .increment(1);
                    tracing::warn!(attempt = %a.envelope.event_id, answered = given,
                        decided = %answer.action, "the policy server answered differently");
                }
                let decided = GreylistDecided {
                    envelope: Envelope::caused_by(&a.envelope, "greylist"),
                    triplet: answer.triplet,
                    verdict: answer.verdict,
                    reason: answer.reason,
                    action: answer.action,
                    delay_seconds: answer.delay_seconds,
                    policy_host: a.policy_host.clone(),
                    settings_hash,
                };
                let key = input.meta.key.clone().unwrap_or_default();
                d.emit(&self.decisions_topic, key, decided);
            }
        }
        Ok(d)
    }
}

/// The `verdict` label of a decision: the variant's name in lower case,
/// without formatting one per event.
pub fn verdict_label(v: GreylistVerdict) -> &'static str {
    match v {
        GreylistVerdict::Defer => "defer",
        GreylistVerdict::Pass => "pass",
        GreylistVerdict::Unknown => "unknown",
    }
}

/// The `reason` label of a decision: the variant's name in lower case.
pub fn reason_label(r: GreylistReason) -> &'static str {
    match r {
        GreylistReason::New => "new",
        GreylistReason::TooEarly => "tooearly",
        GreylistReason::Passed => "passed",
        GreylistReason::WhitelistedClient => "whitelistedclient",
        GreylistReason::WhitelistedRecipient => "whitelistedrecipient",
        GreylistReason::AutoWhitelisted => "autowhitelisted",
        GreylistReason::MissingAttributes => "missingattributes",
        GreylistReason::RetryWindowExpired => "retrywindowexpired",
        GreylistReason::Unknown => "unknown",
    }
}

#[cfg(test)]
mod tests;
