-- The demo shop pipeline as SQL views: ODS -> DWD -> DWS, kept up to date from the ODS changelogs.
-- Run with `flowlake run dataflows/shop.sql` (add -r DIR -s 0.5 for recovery and half-second epochs);
-- `flowlake explain dataflows/shop.sql` shows the plan. The same tables as the Python flows in
-- flowlake/demo/flows.py, from the same SELECTs that `flowlake verify` runs in DuckDB.

-- DWD: every order with its shop's city and category (a regular left join: a shop moving city
-- revises its orders).
CREATE MATERIALIZED VIEW dwd.orders_enriched AS
SELECT o.order_id, o.shop_id, s.city, s.category, o.user_id, o.status, o.amount, o.created_at
FROM ods.orders o LEFT JOIN ods.shops s ON o.shop_id = s.shop_id;

-- DWS: GMV per shop per minute, an updating window; changes more than two hours late go to
-- dws.shop_gmv_minute_late instead.
CREATE MATERIALIZED VIEW dws.shop_gmv_minute WITH (horizon = '2h') AS
SELECT shop_id, date_trunc('minute', created_at) AS minute, count(*) AS orders,
       coalesce(sum(amount) FILTER (WHERE status = 'paid'), 0) AS paid_gmv,
       avg(amount) AS avg_amount, max(amount) AS max_amount, count(DISTINCT user_id) AS distinct_users
FROM dwd.orders_enriched
WHERE shop_id IS NOT NULL AND created_at IS NOT NULL
GROUP BY ALL;

-- DWS: per city and day, an aggregate of the minute aggregate's changelog.
CREATE MATERIALIZED VIEW dws.city_day AS
SELECT s.city, date_trunc('day', m.minute) AS day, CAST(sum(m.orders) AS BIGINT) AS orders,
       sum(m.paid_gmv) AS paid_gmv, max(m.max_amount) AS max_amount, count(DISTINCT m.shop_id) AS active_shops
FROM dws.shop_gmv_minute m JOIN ods.shops s ON m.shop_id = s.shop_id
WHERE s.city IS NOT NULL
GROUP BY ALL;
