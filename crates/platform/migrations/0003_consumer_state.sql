-- Consumer-side state of the consumer helper (issue 6).

-- Inbox entries are pruned once older than the longest redelivery window.
CREATE INDEX inbox_applied ON inbox (applied_at);

-- An aggregate whose event failed: later events of it are deferred until this one is
-- applied or dead-lettered, so a retry cannot reorder the aggregate's history.
CREATE TABLE consumer_blocks (
    consumer   TEXT NOT NULL,
    aggregate  TEXT NOT NULL,
    sequence   BIGINT NOT NULL,
    event_id   TEXT NOT NULL,
    blocked_at BIGINT NOT NULL,
    PRIMARY KEY (consumer, aggregate)
);

-- Events deferred behind a block, so they are applied in sequence order after it.
CREATE TABLE consumer_deferrals (
    consumer    TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    aggregate   TEXT NOT NULL,
    sequence    BIGINT NOT NULL,
    deferred_at BIGINT NOT NULL,
    PRIMARY KEY (consumer, event_id)
);
CREATE INDEX consumer_deferrals_aggregate ON consumer_deferrals (consumer, aggregate, sequence);
