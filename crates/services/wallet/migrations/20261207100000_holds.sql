-- Holds other services ask for (a generation's price, later an offer's amount): a
-- transaction row with status pending whose amount is held on the user's account, then
-- settled (captured), released, or refused when the money was not there. `reference`
-- names what it is for (`generation:<id>`), once.
ALTER TABLE wallet_transactions ADD COLUMN reference TEXT;
CREATE UNIQUE INDEX wallet_transactions_reference ON wallet_transactions (reference);
