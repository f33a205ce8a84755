-- Offers on listings. A buyer's offer holds its amount (wallet_transactions reference
-- `offer:<id>`) until it is accepted (the hold pays for the sale), rejected, cancelled,
-- expired or closed (the listing sold or was withdrawn): then the hold is released. A
-- seller's counter answers an offer with another amount; the offer it answers keeps its
-- hold (status countered) until the counter ends.
CREATE TABLE offers (
    id         TEXT PRIMARY KEY,          -- UUID v7
    listing_id TEXT NOT NULL REFERENCES listings (id),
    asset_id   TEXT NOT NULL,
    buyer_id   TEXT NOT NULL,
    seller_id  TEXT NOT NULL,
    kind       TEXT NOT NULL,             -- offer | counter
    parent_id  TEXT,                      -- a counter: the offer it answers
    amount     BIGINT NOT NULL,
    status     TEXT NOT NULL,             -- open | countered | accepted | rejected | cancelled | expired | closed
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    CHECK (amount > 0)
);
-- One live offer per buyer and listing.
CREATE UNIQUE INDEX offers_one_live_per_buyer ON offers (listing_id, buyer_id)
    WHERE kind = 'offer' AND status IN ('open', 'countered');
CREATE INDEX offers_listing ON offers (listing_id, status);
CREATE INDEX offers_buyer ON offers (buyer_id, id);
CREATE INDEX offers_seller ON offers (seller_id, id);
CREATE INDEX offers_expiry ON offers (status, expires_at);
