-- Durable timers and saga state (issue 6).

-- A deadline: when `due_at` passes, the timer worker sends `envelope` (a command) to the
-- consumer `destination`, in the same transaction that sets `fired_at`.
CREATE TABLE timers (
    key         TEXT PRIMARY KEY,
    destination TEXT NOT NULL,
    envelope    TEXT NOT NULL,
    due_at      BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    fired_at    BIGINT
);
CREATE INDEX timers_due ON timers (due_at) WHERE fired_at IS NULL;

-- A saga instance's state, saved with optimistic versioning.
CREATE TABLE saga_states (
    saga       TEXT NOT NULL,
    id         TEXT NOT NULL,
    version    BIGINT NOT NULL,
    state      TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (saga, id)
);
