-- Browsers that have signed in to an account: the log-in policy slows strangers guessing
-- at an account, never its owner's known browsers (docs/login-policy.md).
CREATE TABLE login_devices (
    token_hash TEXT PRIMARY KEY,          -- SHA-256 of the cookie value; the value is never stored
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL
);
CREATE INDEX login_devices_user ON login_devices (user_id);
CREATE INDEX login_devices_created ON login_devices (created_at);

-- An email's look-alike key (domain::Email::lookalike_key): two emails that look the same
-- have the same key, so they are one account. Rows older than this column get theirs when
-- identity starts.
ALTER TABLE users ADD COLUMN email_lookalike_key TEXT;
CREATE UNIQUE INDEX users_lookalike ON users (email_lookalike_key);
