-- Stock per SKU. `available` is on_hand - reserved; the CHECK is the last line of defence
-- behind the conditional UPDATEs: no statement can make stock negative or over-reserved.
CREATE TABLE stock (
    sku        TEXT PRIMARY KEY,
    on_hand    BIGINT NOT NULL,
    reserved   BIGINT NOT NULL DEFAULT 0,
    updated_at BIGINT NOT NULL,               -- UTC microseconds
    CHECK (reserved >= 0 AND reserved <= on_hand AND on_hand >= 0)
);

-- One row per order inventory has decided on: the order-level guard that makes a repeated
-- reserve harmless. held (its lines are reserved until expires_at) → committed | released;
-- rejected (nothing was reserved). A cancel that arrives first leaves it released.
CREATE TABLE reservations (
    order_id   TEXT PRIMARY KEY,
    status     TEXT NOT NULL,
    reason     TEXT,                          -- why rejected or released
    expires_at BIGINT,                        -- UTC microseconds, while held
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    CHECK (status IN ('held', 'committed', 'released', 'rejected'))
);
CREATE INDEX reservations_held_by_expiry ON reservations (expires_at) WHERE status = 'held';

-- What a held (or committed) reservation holds: one row per SKU of the order.
CREATE TABLE reservation_lines (
    order_id TEXT NOT NULL REFERENCES reservations (order_id),
    sku      TEXT NOT NULL,
    quantity BIGINT NOT NULL,
    PRIMARY KEY (order_id, sku),
    CHECK (quantity > 0)
);

-- The audit trail of admins' adjustments: who changed on-hand stock, by how much, why.
CREATE TABLE stock_adjustments (
    id            TEXT PRIMARY KEY,           -- UUID v7: ordered by time
    sku           TEXT NOT NULL,
    delta         BIGINT NOT NULL,
    reason        TEXT NOT NULL,
    by_user       TEXT NOT NULL,
    on_hand_after BIGINT NOT NULL,
    at            BIGINT NOT NULL,            -- UTC microseconds
    CHECK (delta <> 0)
);
CREATE INDEX stock_adjustments_by_sku ON stock_adjustments (sku, id);
