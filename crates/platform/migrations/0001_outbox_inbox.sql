-- The transactional outbox: events written in the same transaction as the state change
-- they describe, published by the relay, marked sent only after the bus confirmed them.
CREATE TABLE outbox (
    id            TEXT PRIMARY KEY,      -- envelope id, UUID v7: orders by creation
    event_type    TEXT NOT NULL,
    envelope      TEXT NOT NULL,         -- the whole envelope as JSON
    created_at    BIGINT NOT NULL,       -- UTC microseconds
    claimed_until BIGINT,                -- a relay's lease on the row while it publishes
    sent_at       BIGINT                 -- NULL until the bus confirmed it
);
CREATE INDEX outbox_unsent ON outbox (sent_at, id);

-- The inbox: the ids of events a consumer has applied, written in the same transaction
-- as the effect, so a redelivered event changes nothing.
CREATE TABLE inbox (
    consumer    TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    applied_at  BIGINT NOT NULL,
    PRIMARY KEY (consumer, event_id)
);
