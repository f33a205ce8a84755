-- Store orders, their lines and their status history. Portable SQL (SQLite, PostgreSQL).
-- The order row is the checkout saga's state: every step is a conditional UPDATE from the
-- status (and stage) it expects, so a redelivered or late event changes nothing.
CREATE TABLE orders (
    id              TEXT PRIMARY KEY,        -- UUID v7
    buyer_id        TEXT NOT NULL,
    -- pending | confirmed | cancelled | shipped | delivered | refunded
    status          TEXT NOT NULL,
    -- Where a pending order's saga is: placed (waiting for stock) | reserved (waiting for
    -- payment); done once it left pending.
    stage           TEXT NOT NULL,
    reason          TEXT,                    -- why it was cancelled or refunded
    currency        TEXT NOT NULL,
    total           BIGINT NOT NULL,         -- minor units
    item_count      BIGINT NOT NULL,
    shipping        TEXT NOT NULL,           -- JSON address
    idempotency_key TEXT NOT NULL,
    request         TEXT NOT NULL,           -- the checkout body as parsed (canonical JSON)
    cart_cleared    BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    UNIQUE (buyer_id, idempotency_key),
    CHECK (total > 0 AND item_count > 0),
    CHECK (status IN ('pending', 'confirmed', 'cancelled', 'shipped', 'delivered', 'refunded'))
);
CREATE INDEX orders_buyer ON orders (buyer_id, id);
CREATE INDEX orders_status ON orders (status, id);

CREATE TABLE order_lines (
    order_id   TEXT NOT NULL REFERENCES orders (id),
    position   BIGINT NOT NULL,
    sku        TEXT NOT NULL,
    product_id TEXT NOT NULL,
    title      TEXT NOT NULL,
    variant    TEXT NOT NULL,
    seller_id  TEXT NOT NULL,
    asset_id   TEXT,
    unit_price BIGINT NOT NULL,
    quantity   BIGINT NOT NULL,
    PRIMARY KEY (order_id, position),
    CHECK (unit_price > 0 AND quantity > 0)
);

CREATE TABLE order_history (
    order_id TEXT NOT NULL REFERENCES orders (id),
    seq      BIGINT NOT NULL,
    status   TEXT NOT NULL,
    note     TEXT NOT NULL,
    at       BIGINT NOT NULL,
    PRIMARY KEY (order_id, seq)
);
