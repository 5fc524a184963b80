MODEL (
  name sushi.top_products_daily,
  kind INCREMENTAL_BY_TIME_RANGE (time_column transaction_date, batch_size 31),
  grain (transaction_date, product_rank),
  description 'The three best-selling products of each day',
  audits (accepted_range(column := product_rank, min_v := 1, max_v := 3))
);

WITH product_sales AS (
  SELECT
    f.transaction_date,
    f.product_id,
    SUM(f.quantity) AS items_sold,
    SUM(f.amount) AS revenue
  FROM sushi.fact_sales_transactions AS f
  WHERE f.transaction_date BETWEEN @start_date AND @end_date
  GROUP BY f.transaction_date, f.product_id
),
ranked AS (
  SELECT
    p.*,
    -- Ties broken by product id so the ranking is deterministic; BIGINT as DataFusion's.
    CAST(ROW_NUMBER() OVER (PARTITION BY p.transaction_date ORDER BY p.revenue DESC, p.product_id) AS BIGINT) AS product_rank
  FROM product_sales AS p
)
SELECT
  r.transaction_date,
  r.product_rank,
  r.product_id,
  m.product_name,
  r.items_sold,
  r.revenue
FROM ranked AS r
JOIN sushi.menu_items AS m ON m.product_id = r.product_id
WHERE r.product_rank <= 3
