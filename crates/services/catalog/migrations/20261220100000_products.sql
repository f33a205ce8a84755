-- Store products and their variants. Portable SQL for SQLite and PostgreSQL; the full-text
-- index over `search_text` is the one dialect difference and is made by `src/search.rs`.
CREATE TABLE products (
    id          TEXT PRIMARY KEY,          -- UUID v7
    seller_id   TEXT NOT NULL,
    kind        TEXT NOT NULL,             -- print | book | goods
    title       TEXT NOT NULL,
    description TEXT NOT NULL,
    category    TEXT NOT NULL,             -- a slug
    images      TEXT NOT NULL,             -- JSON array of URLs
    asset_id    TEXT,                      -- the image a print is made of
    status      TEXT NOT NULL,             -- active | archived
    currency    TEXT NOT NULL,
    min_price   BIGINT NOT NULL,           -- lowest and highest variant price, minor units
    max_price   BIGINT NOT NULL,
    -- Normalized words (see search.rs), each list with a space before and after every word:
    -- what ranking compares query words against, the same way on both backends.
    title_terms TEXT NOT NULL,
    tag_terms   TEXT NOT NULL,
    -- Every word of the product (title, category, tags, description, variants): what the
    -- full-text engine indexes.
    search_text TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    CHECK (min_price > 0 AND max_price >= min_price)
);
CREATE INDEX products_status_id ON products (status, id);
CREATE INDEX products_status_price ON products (status, min_price, id);
CREATE INDEX products_status_category ON products (status, category);
CREATE INDEX products_seller ON products (seller_id, id);

CREATE TABLE variants (
    sku        TEXT PRIMARY KEY,           -- unique across the catalog
    product_id TEXT NOT NULL REFERENCES products (id),
    position   BIGINT NOT NULL,
    name       TEXT NOT NULL,
    options    TEXT NOT NULL,              -- JSON object, e.g. {"size":"A3","paper":"matte"}
    price      BIGINT NOT NULL,            -- minor units of products.currency
    -- 1 while the variant can be bought. Inventory will keep it up to date from its stock
    -- events; until then every variant is in stock.
    in_stock   BIGINT NOT NULL DEFAULT 1,
    CHECK (price > 0),
    CHECK (in_stock IN (0, 1)),
    UNIQUE (product_id, position)
);
CREATE INDEX variants_product_price ON variants (product_id, price);

CREATE TABLE product_tags (
    product_id TEXT NOT NULL REFERENCES products (id),
    tag        TEXT NOT NULL,
    PRIMARY KEY (product_id, tag)
);
CREATE INDEX product_tags_tag ON product_tags (tag, product_id);
