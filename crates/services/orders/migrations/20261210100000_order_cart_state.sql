-- What an order did to its buyer's cart (decision 62). The ordered lines leave the cart
-- when the order is placed, and come back if the order fails before it is confirmed:
--   0  due      placed; its lines are still in the cart
--   1  taken    taken out of the cart, not confirmed yet (a cancel puts them back)
--   2  settled  nothing more to do (bought, put back, or cancelled before being taken)
--   3  bought   confirmed while its lines were still in the cart: take them out
ALTER TABLE orders RENAME COLUMN cart_cleared TO cart_state;
UPDATE orders SET cart_state = CASE
    WHEN cart_state = 1 THEN 2
    WHEN status = 'pending' THEN 0
    WHEN status IN ('confirmed', 'shipped', 'delivered') THEN 3
    ELSE 2
END;
CREATE INDEX orders_cart_state ON orders (cart_state, id);
