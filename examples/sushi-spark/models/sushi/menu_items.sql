MODEL (
  name sushi.menu_items,
  kind SEED (path '../../seeds/menu_items.csv'),
  grain product_id,
  description 'The menu, with list prices in EUR'
);
