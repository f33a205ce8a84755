-- The wallet's ledger. Portable SQL: runs unchanged on SQLite and PostgreSQL.
-- Amounts are integer minor units (BIGINT); times are UTC microseconds.

-- One account per user (`user:<id>`) and the platform's own (`platform:<name>`).
-- `balance` is kept in step with the postings in the same transaction; `held` is the
-- part of a user's balance promised to a pending payout (available = balance - held).
CREATE TABLE wallet_accounts (
    id         TEXT PRIMARY KEY,
    owner_id   TEXT,                      -- the user, for user accounts
    currency   TEXT NOT NULL,
    balance    BIGINT NOT NULL DEFAULT 0,
    held       BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    -- A user's money never goes below zero, and never less than what is held.
    CHECK (owner_id IS NULL OR (balance >= 0 AND held >= 0 AND held <= balance))
);

-- What a user sees in their history: one row per top-up or payout.
CREATE TABLE wallet_transactions (
    id              TEXT PRIMARY KEY,     -- UUID v7: ordered by time
    user_id         TEXT NOT NULL,
    kind            TEXT NOT NULL,        -- topup | payout
    status          TEXT NOT NULL,        -- settled | pending | reversed
    amount          BIGINT NOT NULL,      -- from the user's side: + in, - out
    description     TEXT NOT NULL,
    idempotency_key TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    UNIQUE (user_id, idempotency_key)
);
CREATE INDEX wallet_transactions_user ON wallet_transactions (user_id, id);
CREATE INDEX wallet_transactions_pending ON wallet_transactions (status, created_at);

-- Double entry: the postings of one transaction sum to zero.
CREATE TABLE wallet_postings (
    id             TEXT PRIMARY KEY,
    transaction_id TEXT NOT NULL REFERENCES wallet_transactions (id),
    account_id     TEXT NOT NULL REFERENCES wallet_accounts (id),
    amount         BIGINT NOT NULL,
    created_at     BIGINT NOT NULL
);
CREATE INDEX wallet_postings_account ON wallet_postings (account_id);
CREATE INDEX wallet_postings_transaction ON wallet_postings (transaction_id);
