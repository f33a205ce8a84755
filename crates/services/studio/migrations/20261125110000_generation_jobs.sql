-- Studio's generation jobs. Portable SQL: runs unchanged on SQLite and PostgreSQL.
CREATE TABLE generation_jobs (
    id              TEXT PRIMARY KEY,     -- UUID v7; the asset the image becomes has the same id
    user_id         TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    prompt          TEXT NOT NULL,
    negative_prompt TEXT,
    width           BIGINT NOT NULL,
    height          BIGINT NOT NULL,
    seed            BIGINT NOT NULL,
    provider        TEXT NOT NULL,
    status          TEXT NOT NULL,        -- queued | running | succeeded | failed
    error           TEXT,                 -- a sentence a person can read, when failed
    model           TEXT,
    original_key    TEXT,
    thumbnail_key   TEXT,
    attempts        BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    UNIQUE (user_id, idempotency_key)
);
CREATE INDEX generation_jobs_status ON generation_jobs (status, updated_at);
CREATE INDEX generation_jobs_user ON generation_jobs (user_id, id);

-- Jobs each person has queued or running, kept in step with the jobs in the same
-- transactions: the per-person limit is one conditional UPDATE, so concurrent requests
-- cannot pass it together.
CREATE TABLE generation_quota (
    user_id TEXT PRIMARY KEY,
    active  BIGINT NOT NULL
);
