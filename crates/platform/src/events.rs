//! The event envelope every service publishes and consumes.
//!
//! An event is a fact a service states about its own data ("a user registered"). Its
//! payload is a versioned type declared in the publishing service's `events` module; on the
//! wire and in the outbox it travels inside an [`Envelope`] whose `id` is what consumers
//! de-duplicate on. The catalogue of events lives in `docs/events.md`.
//!
//! Order is promised per aggregate only: an envelope may name its `aggregate` (say
//! `order:<uuid>`), and the outbox stamps a per-aggregate `sequence` in the producer's
//! transaction. Events without an aggregate are unordered. `correlation_id` and
//! `causation_id` are filled in automatically when an envelope is made while a consumer is
//! handling another message (the helper in [`crate::consumer`] sets that scope), the way
//! `trace` is.

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

/// A payload type that can be published: it names its type and schema version.
pub trait Event: Serialize + DeserializeOwned {
    /// Stable dotted name, `service.Fact`, e.g. `identity.UserRegistered`. It is the bus routing key.
    const TYPE: &'static str;
    /// Bumped when a field changes meaning or is removed; adding an optional field is not a bump.
    const VERSION: u32;
}

/// What travels through outbox, bus and inbox.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// UUID v7; consumers apply each id at most once.
    pub id: Uuid,
    #[serde(rename = "type")]
    pub event_type: String,
    pub version: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    /// W3C `traceparent` of the request or message that caused the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
    pub payload: serde_json::Value,
    /// The entity whose history this event belongs to, `kind:id`; events of one aggregate
    /// are published and applied in `sequence` order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<String>,
    /// Position in the aggregate's history (1, 2, …), assigned by [`crate::outbox::enqueue`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<i64>,
    /// The first message of the conversation (a saga's starting event); its own id for a root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Uuid>,
    /// The message whose handling produced this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
}

/// Longest accepted aggregate key (`kind:id`).
pub const MAX_AGGREGATE_LEN: usize = 200;

tokio::task_local! {
    /// The message being handled on this task, so that envelopes made while handling it
    /// carry its correlation and causation.
    static HANDLING: Handling;
}

/// What a new envelope inherits from the message being handled.
#[derive(Clone, Copy, Debug)]
pub struct Handling {
    pub id: Uuid,
    pub correlation_id: Uuid,
}

impl Handling {
    pub fn of(envelope: &Envelope) -> Self {
        Self {
            id: envelope.id,
            correlation_id: envelope.correlation_id.unwrap_or(envelope.id),
        }
    }
}

/// Runs `fut` as the handling of `envelope`: envelopes made inside inherit its correlation
/// and name it as their cause.
pub async fn while_handling<F: std::future::Future>(envelope: &Envelope, fut: F) -> F::Output {
    HANDLING.scope(Handling::of(envelope), fut).await
}

fn current_handling() -> Option<Handling> {
    HANDLING.try_with(|h| *h).ok()
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("expected event {expected} v{expected_version}, got {actual} v{actual_version}")]
    WrongType {
        expected: &'static str,
        expected_version: u32,
        actual: String,
        actual_version: u32,
    },
    #[error("payload of {event_type} does not match its schema: {source}")]
    Payload {
        event_type: String,
        source: serde_json::Error,
    },
}

impl Envelope {
    /// Wraps a payload, stamping a fresh id, the current time and the current trace.
    pub fn new<E: Event>(event: &E) -> Self {
        let id = Uuid::now_v7();
        let handling = current_handling();
        Self {
            id,
            event_type: E::TYPE.to_owned(),
            version: E::VERSION,
            occurred_at: crate::clock::now(),
            trace: crate::telemetry::current_traceparent(),
            // Serialising a plain data struct to a Value cannot fail.
            payload: serde_json::to_value(event).unwrap_or(serde_json::Value::Null),
            aggregate: None,
            sequence: None,
            correlation_id: Some(handling.map_or(id, |h| h.correlation_id)),
            causation_id: handling.map(|h| h.id),
        }
    }

    /// Puts the event in the history of aggregate `kind:id`, whose events are published and
    /// applied in order. `kind` is a fixed word of the code (`order`, `user`).
    pub fn with_aggregate(mut self, kind: &str, id: impl std::fmt::Display) -> Self {
        let mut key = format!("{kind}:{id}");
        if key.len() > MAX_AGGREGATE_LEN {
            // Keys come from code and ids; a longer one is a bug, not input: keep it bounded.
            let mut end = MAX_AGGREGATE_LEN;
            while !key.is_char_boundary(end) {
                end -= 1;
            }
            key.truncate(end);
        }
        self.aggregate = Some(key);
        self
    }

    pub fn is<E: Event>(&self) -> bool {
        self.event_type == E::TYPE
    }

    /// The typed payload, if this envelope carries `E` at its current version.
    pub fn decode<E: Event>(&self) -> Result<E, DecodeError> {
        if self.event_type != E::TYPE || self.version != E::VERSION {
            return Err(DecodeError::WrongType {
                expected: E::TYPE,
                expected_version: E::VERSION,
                actual: self.event_type.clone(),
                actual_version: self.version,
            });
        }
        serde_json::from_value(self.payload.clone()).map_err(|source| DecodeError::Payload {
            event_type: self.event_type.clone(),
            source,
        })
    }

    /// The typed value of an envelope that `M` accepts (any of its types and versions).
    pub fn decode_as<M: Incoming>(&self) -> Result<M, DecodeError> {
        M::decode(self)
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// What a consumer reads: one or more event (or command) types, at one or more versions,
/// decoded into one typed value. Every [`Event`] is one at its own type and version; a
/// consumer that accepts several versions or types writes an enum and implements this.
pub trait Incoming: Sized + Send + 'static {
    /// Binding patterns for published events (AMQP topic syntax: `*` one word, `#` any).
    /// Commands sent point-to-point reach the consumer without a binding.
    fn event_types() -> Vec<String>;
    /// The typed value, or [`DecodeError`] for a type or version this does not accept.
    fn decode(envelope: &Envelope) -> Result<Self, DecodeError>;
}

impl<E: Event + Send + 'static> Incoming for E {
    fn event_types() -> Vec<String> {
        vec![E::TYPE.to_owned()]
    }
    fn decode(envelope: &Envelope) -> Result<Self, DecodeError> {
        envelope.decode::<E>()
    }
}

impl DecodeError {
    /// For [`Incoming`] implementations: this envelope is not one of the accepted kinds.
    pub fn unexpected(expected: &'static str, envelope: &Envelope) -> Self {
        Self::WrongType {
            expected,
            expected_version: 0,
            actual: envelope.event_type.clone(),
            actual_version: envelope.version,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Pinged {
        n: u32,
    }
    impl Event for Pinged {
        const TYPE: &'static str = "test.Pinged";
        const VERSION: u32 = 1;
    }

    #[derive(Debug, Serialize, Deserialize)]
    struct Other {}
    impl Event for Other {
        const TYPE: &'static str = "test.Other";
        const VERSION: u32 = 1;
    }

    #[test]
    fn envelope_round_trips_as_json_with_rfc3339_time() {
        let env = Envelope::new(&Pinged { n: 7 });
        let json = String::from_utf8(env.to_json()).unwrap();
        assert!(json.contains(r#""type":"test.Pinged""#), "{json}");
        assert!(json.contains('T') && json.contains('Z'), "{json}");
        let back = Envelope::from_json(json.as_bytes()).unwrap();
        assert_eq!(back, env);
        assert_eq!(back.decode::<Pinged>().unwrap(), Pinged { n: 7 });
    }

    #[test]
    fn an_envelope_written_before_aggregates_existed_still_decodes() {
        let old = r#"{"id":"0190a0a0-0000-7000-8000-000000000001","type":"test.Pinged","version":1,
            "occurred_at":"2026-01-01T00:00:00Z","payload":{"n":3}}"#;
        let env = Envelope::from_json(old.as_bytes()).unwrap();
        assert_eq!(env.aggregate, None);
        assert_eq!(env.sequence, None);
        assert_eq!(env.decode::<Pinged>().unwrap(), Pinged { n: 3 });
    }

    #[tokio::test]
    async fn envelopes_made_while_handling_a_message_carry_its_correlation_and_causation() {
        let root = Envelope::new(&Pinged { n: 1 });
        assert_eq!(root.correlation_id, Some(root.id));
        assert_eq!(root.causation_id, None);
        let child = while_handling(&root, async { Envelope::new(&Pinged { n: 2 }) }).await;
        assert_eq!(child.correlation_id, Some(root.id));
        assert_eq!(child.causation_id, Some(root.id));
        let grandchild = while_handling(&child, async { Envelope::new(&Pinged { n: 3 }) }).await;
        assert_eq!(grandchild.correlation_id, Some(root.id));
        assert_eq!(grandchild.causation_id, Some(child.id));
    }

    #[test]
    fn decoding_as_the_wrong_type_is_an_error() {
        let env = Envelope::new(&Pinged { n: 1 });
        assert!(env.decode::<Other>().is_err());
        let mut bumped = env.clone();
        bumped.version = 2;
        assert!(bumped.decode::<Pinged>().is_err());
    }
}
