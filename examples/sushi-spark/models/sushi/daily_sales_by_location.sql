MODEL (
  name sushi.daily_sales_by_location,
  kind INCREMENTAL_BY_TIME_RANGE (time_column transaction_date, batch_size 31),
  grain (transaction_date, location_id),
  tags (finance, daily),
  description 'Revenue and transaction count per location and day',
  audits (number_of_rows(threshold := 1))
);

SELECT
  transaction_date,
  location_id,
  location_name,
  COUNT(*) AS transactions,
  SUM(quantity) AS items_sold,
  SUM(amount) AS revenue
FROM sushi.fact_sales_transactions
WHERE transaction_date BETWEEN @start_date AND @end_date
GROUP BY transaction_date, location_id, location_name
