//! The event envelope every service publishes and consumes.
//!
//! An event is a fact a service states about its own data ("a user registered"). Its
//! payload is a versioned type declared in the publishing service's `events` module; on the
//! wire and in the outbox it travels inside an [`Envelope`] whose `id` is what consumers
//! de-duplicate on. The catalogue of events lives in `docs/events.md`.

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
        Self {
            id: Uuid::now_v7(),
            event_type: E::TYPE.to_owned(),
            version: E::VERSION,
            occurred_at: crate::clock::now(),
            trace: crate::telemetry::current_traceparent(),
            // Serialising a plain data struct to a Value cannot fail.
            payload: serde_json::to_value(event).unwrap_or(serde_json::Value::Null),
        }
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

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
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
    fn decoding_as_the_wrong_type_is_an_error() {
        let env = Envelope::new(&Pinged { n: 1 });
        assert!(env.decode::<Other>().is_err());
        let mut bumped = env.clone();
        bumped.version = 2;
        assert!(bumped.decode::<Pinged>().is_err());
    }
}
