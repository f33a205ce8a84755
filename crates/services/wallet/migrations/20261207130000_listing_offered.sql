-- Whether a listing ever had an offer: a sale ends live offers only when it did, so the
-- common buy (a listing nobody offered on) skips that statement.
ALTER TABLE listings ADD COLUMN offered BIGINT NOT NULL DEFAULT 0;
