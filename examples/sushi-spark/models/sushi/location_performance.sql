-- A view: nothing is stored; it reads the environment's daily_sales_by_location.
MODEL (
  name sushi.location_performance,
  kind VIEW,
  grain location_id,
  description 'Lifetime revenue and average daily revenue per location'
);

SELECT
  d.location_id,
  l.city,
  l.location_name,
  SUM(d.revenue) AS total_revenue,
  AVG(d.revenue) AS avg_daily_revenue,
  COUNT(*) AS days_open
FROM sushi.daily_sales_by_location AS d
JOIN sushi.locations AS l ON l.location_id = d.location_id
GROUP BY d.location_id, l.city, l.location_name
