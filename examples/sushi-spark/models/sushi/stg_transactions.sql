-- One row per transaction line, priced from the menu.
MODEL (
  name sushi.stg_transactions,
  kind INCREMENTAL_BY_TIME_RANGE (time_column transaction_date, batch_size 31),
  grain transaction_id,
  description 'Transactions priced from the menu, with discounts applied'
);

SELECT
  t.transaction_date,
  t.transaction_id,
  t.location_id,
  t.customer_id,
  t.product_id,
  t.quantity,
  m.price AS unit_price,
  t.discounted,
  CAST(t.quantity * m.price * CASE WHEN t.discounted THEN 0.9 ELSE 1.0 END AS DECIMAL(12, 2)) AS amount
FROM raw.pos_transactions AS t
JOIN sushi.menu_items AS m ON m.product_id = t.product_id
WHERE t.transaction_date BETWEEN @start_date AND @end_date
