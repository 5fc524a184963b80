MODEL (
  name sushi.locations,
  kind SEED (path '../../seeds/locations.csv'),
  grain location_id,
  description 'Restaurant locations'
);
