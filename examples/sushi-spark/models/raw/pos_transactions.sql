-- Point-of-sale transactions. A real project would read them from a source declared in
-- tidemark.toml; the example generates them deterministically so it runs with no downloads:
-- 200 transactions a day, every value derived from the day number and the transaction number.
-- Spark SQL: `explode(sequence(...))` generates the rows (DataFusion's version: `unnest(generate_series(...))`).
MODEL (
  name raw.pos_transactions,
  kind INCREMENTAL_BY_TIME_RANGE (time_column transaction_date, batch_size 31),
  grain transaction_id,
  description 'Point-of-sale transactions (generated: 200 per day)',
  column_descriptions (
    transaction_id = 'unique per transaction: day number * 1000 + sequence',
    discounted = 'a 10% loyalty discount applies'
  ),
  audits (not_null(columns := (transaction_id, transaction_date)))
);

SELECT
  d.transaction_date,
  d.day_number * 1000 + s.n AS transaction_id,
  CAST((s.n * 7919 + d.day_number * 31) % 5 + 1 AS INT) AS location_id,
  CAST((s.n * 104729 + d.day_number * 13) % 12 + 1 AS INT) AS product_id,
  (s.n * 15485863 + d.day_number * 7) % 500 + 1 AS customer_id,
  CAST((s.n * 31 + d.day_number) % 4 + 1 AS INT) AS quantity,
  s.n % 10 = 0 AS discounted
FROM (
  SELECT
    CAST(g.day AS DATE) AS transaction_date,
    CAST(unix_timestamp(g.day) / 86400 AS BIGINT) AS day_number
  FROM (SELECT explode(sequence(@start_dt, @end_dt, INTERVAL 1 DAY)) AS day) AS g
) AS d
CROSS JOIN (SELECT explode(sequence(CAST(1 AS BIGINT), CAST(200 AS BIGINT))) AS n) AS s
