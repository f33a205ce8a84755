-- Identity's tables. Portable SQL: runs unchanged on SQLite and PostgreSQL.
-- Ids are UUID v7 text; times are UTC microseconds (BIGINT).

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,   -- normalised (trimmed, lower-case)
    display_name  TEXT NOT NULL,
    password_hash TEXT NOT NULL,          -- argon2id PHC string; never leaves this service
    roles         TEXT NOT NULL,          -- comma-separated: customer,seller,admin
    created_at    BIGINT NOT NULL
);

CREATE TABLE sessions (
    id          TEXT PRIMARY KEY,
    token_hash  TEXT NOT NULL UNIQUE,     -- SHA-256 of the cookie value; the value is never stored
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    csrf_token  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX sessions_expiry ON sessions (expires_at);

CREATE TABLE api_tokens (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    token_hash   TEXT NOT NULL UNIQUE,    -- SHA-256 of the secret
    prefix       TEXT NOT NULL,           -- first characters of the secret, for recognition
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at   BIGINT
);
CREATE INDEX api_tokens_user ON api_tokens (user_id, id);
