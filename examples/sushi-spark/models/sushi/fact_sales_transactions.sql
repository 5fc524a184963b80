MODEL (
  name sushi.fact_sales_transactions,
  kind INCREMENTAL_BY_TIME_RANGE (time_column transaction_date, batch_size 7, lookback 1),
  grain transaction_id,
  tags (finance, daily),
  description 'Sales transactions: the fact table',
  column_descriptions (amount = 'amount paid in EUR after discounts'),
  audits (
    not_null(columns := (transaction_id, location_id, amount)),
    unique_values(columns := (transaction_id)),
    accepted_range(column := quantity, min_v := 1, max_v := 10)
  )
);

SELECT
  s.transaction_date,
  s.transaction_id,
  s.location_id,
  l.location_name,
  s.customer_id,
  s.product_id,
  s.quantity,
  s.amount
FROM sushi.stg_transactions AS s
JOIN sushi.locations AS l ON l.location_id = s.location_id
WHERE s.transaction_date BETWEEN @start_date AND @end_date
