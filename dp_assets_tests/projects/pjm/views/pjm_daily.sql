/*
description: PJM East energy per day (US Eastern calendar day, the day the grid plans)
key: [region, day]
columns:
  region: PJM region the load is measured in
  day: {description: "Calendar day in US Eastern time", not_null: true}
  energy_mwh: {description: "Energy over the day, MWh (sum of the hourly mean loads)", min: 0}
  hours: {description: "Hours with a reading: 24, or 23/25 on DST days; fewer where missing", min: 1, max: 25}
*/
SELECT 'PJME' AS region,
       CAST(timezone('America/New_York', hour_start) AS DATE) AS day,
       CAST(sum(CAST(load_mw AS DECIMAL(18, 3))) AS DOUBLE) AS energy_mwh,
       count(*) AS hours
FROM formatted.pjm_load
GROUP BY ALL
