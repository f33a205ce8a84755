-- Carts kept in the service's database (when no Redis is configured). A cart is named by
-- its owner: `u:<user uuid>` or `g:<guest id>`. touched_at (UTC microseconds) moves on
-- every write; a cart idle longer than cart.idle_ttl_secs reads as empty and is deleted
-- by the worker.
CREATE TABLE carts (
    id         TEXT PRIMARY KEY,
    touched_at BIGINT NOT NULL
);
CREATE INDEX carts_by_touched ON carts (touched_at);

-- One line per SKU of a cart. The quantity bound is checked by the conditional upsert that
-- changes it (cart.max_quantity); the CHECK keeps it a positive count whatever happens.
CREATE TABLE cart_lines (
    cart_id  TEXT NOT NULL,
    sku      TEXT NOT NULL,
    quantity BIGINT NOT NULL,
    added_at BIGINT NOT NULL,               -- UTC microseconds: lines are listed oldest first
    PRIMARY KEY (cart_id, sku),
    CHECK (quantity > 0)
);
