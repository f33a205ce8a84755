-- Listings of assets and the sales that close them.
CREATE TABLE listings (
    id         TEXT PRIMARY KEY,          -- UUID v7
    asset_id   TEXT NOT NULL REFERENCES assets (id),
    seller_id  TEXT NOT NULL,
    price      BIGINT NOT NULL,           -- minor units
    status     TEXT NOT NULL,             -- open | sold | withdrawn
    buyer_id   TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    CHECK (price > 0)
);
-- One open listing per asset.
CREATE UNIQUE INDEX listings_one_open_per_asset ON listings (asset_id) WHERE status = 'open';
CREATE INDEX listings_status ON listings (status, id);

CREATE TABLE sales (
    id              TEXT PRIMARY KEY,
    listing_id      TEXT NOT NULL UNIQUE REFERENCES listings (id),
    asset_id        TEXT NOT NULL,
    seller_id       TEXT NOT NULL,
    buyer_id        TEXT NOT NULL,
    price           BIGINT NOT NULL,
    fee             BIGINT NOT NULL,
    royalty         BIGINT NOT NULL,
    idempotency_key TEXT,
    created_at      BIGINT NOT NULL,
    UNIQUE (buyer_id, idempotency_key)
);
