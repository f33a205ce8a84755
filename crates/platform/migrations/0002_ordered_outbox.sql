-- The outbox, rebuilt for order per aggregate (issue 6). `@AUTO_ID@` is replaced by
-- platform::db with the backend's auto-increment primary key.
--
-- * `position`: insertion order; the relay publishes in it.
-- * `aggregate`/`sequence`: the entity's history and the event's place in it, stamped from
--   `outbox_sequences` in the producer's transaction (so pruning sent rows loses nothing).
-- * `destination`: NULL for a published event; a consumer name for a point-to-point command.
-- * `attempts`/`parked_at`/`last_error`: a row that keeps failing to publish (or cannot be
--   read) is parked, so it no longer holds back the rows behind it.
ALTER TABLE outbox RENAME TO outbox_v1;
DROP INDEX IF EXISTS outbox_unsent;

CREATE TABLE outbox (
    position    @AUTO_ID@,
    id          TEXT NOT NULL UNIQUE,
    event_type  TEXT NOT NULL,
    destination TEXT,
    aggregate   TEXT,
    sequence    BIGINT,
    envelope    TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    sent_at     BIGINT,
    attempts    INTEGER NOT NULL DEFAULT 0,
    parked_at   BIGINT,
    last_error  TEXT
);

INSERT INTO outbox (id, event_type, envelope, created_at, sent_at)
SELECT id, event_type, envelope, created_at, sent_at FROM outbox_v1 ORDER BY id;
DROP TABLE outbox_v1;

-- The relay's claim walks this index from its start: no sort, whatever the backlog.
CREATE INDEX outbox_unsent ON outbox (position) WHERE sent_at IS NULL AND parked_at IS NULL;
-- Retention pruning and replay read sent rows by time.
CREATE INDEX outbox_sent ON outbox (sent_at) WHERE sent_at IS NOT NULL;
CREATE INDEX outbox_parked ON outbox (parked_at) WHERE parked_at IS NOT NULL;

-- Last sequence number handed out per aggregate.
CREATE TABLE outbox_sequences (
    aggregate TEXT PRIMARY KEY,
    last      BIGINT NOT NULL
);

-- Leader leases (outbox relay, timer worker): one holder at a time, by the database clock.
CREATE TABLE platform_leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    token      TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
