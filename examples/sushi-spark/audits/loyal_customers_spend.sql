-- Custom audit: customers with more than one visit must have spent more than @min_revenue.
-- Returns the offending rows; an empty result passes.
SELECT *
FROM @this_model
WHERE visits > 1 AND lifetime_revenue <= @min_revenue
