//! Time as stored: UTC microseconds since the Unix epoch in a BIGINT column, the one
//! timestamp representation both SQLite and PostgreSQL compare and index the same way.

use time::OffsetDateTime;

/// Now, in UTC.
pub fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// A timestamp as stored in the database.
pub fn to_micros(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000) as i64
}

/// A stored timestamp back as a UTC time. Out-of-range values (never written by us) clamp
/// to the epoch rather than panic.
pub fn from_micros(micros: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

pub fn now_micros() -> i64 {
    to_micros(now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micros_round_trip() {
        let t = now();
        let back = from_micros(to_micros(t));
        assert!((t - back).abs() < time::Duration::microseconds(1));
    }
}
