MODEL (
  name sushi.customers,
  kind FULL,
  grain customer_id,
  description 'Every customer with lifetime value and first and last visit',
  audits (unique_values(columns := (customer_id)), loyal_customers_spend(min_revenue := 0))
);

SELECT
  customer_id,
  MIN(transaction_date) AS first_visit,
  MAX(transaction_date) AS last_visit,
  COUNT(DISTINCT transaction_date) AS visits,
  SUM(amount) AS lifetime_revenue
FROM sushi.fact_sales_transactions
GROUP BY customer_id
