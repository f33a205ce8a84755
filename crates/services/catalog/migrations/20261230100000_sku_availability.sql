-- What inventory last said about each SKU (inventory.StockOut / StockAvailable), kept by
-- consumer `catalog.stock` (src/stock_in.rs). Kept for SKUs the catalog does not have yet
-- too, so a variant created after its SKU was stocked starts in stock.
CREATE TABLE sku_availability (
    sku      TEXT PRIMARY KEY,
    in_stock BIGINT NOT NULL,
    CHECK (in_stock IN (0, 1))
);

-- A variant is in stock only once inventory says so (docs/decisions.md, 55): a SKU that
-- was never stocked cannot be ordered. Variants written before this consumer existed took
-- the old default of 1 without anyone asking inventory; they start over from 0 and follow
-- the next StockAvailable.
UPDATE variants SET in_stock = 0;
