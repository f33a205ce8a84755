-- Images people own: made by studio (ImageGenerated), owned by their creator until sold.
CREATE TABLE assets (
    id              TEXT PRIMARY KEY,     -- the generation's id
    owner_id        TEXT NOT NULL,
    creator_id      TEXT NOT NULL,
    prompt          TEXT NOT NULL,
    negative_prompt TEXT,
    provider        TEXT NOT NULL,
    model           TEXT NOT NULL,
    seed            BIGINT,
    width           BIGINT NOT NULL,
    height          BIGINT NOT NULL,
    original_key    TEXT NOT NULL,
    thumbnail_key   TEXT NOT NULL,
    created_at      BIGINT NOT NULL
);
CREATE INDEX assets_owner ON assets (owner_id, id);

-- Who owned an asset, in order; written only by its creation and by a sale.
CREATE TABLE asset_owners (
    asset_id TEXT NOT NULL REFERENCES assets (id),
    seq      BIGINT NOT NULL,
    owner_id TEXT NOT NULL,
    since    BIGINT NOT NULL,
    how      TEXT NOT NULL,               -- created | bought
    PRIMARY KEY (asset_id, seq)
);
