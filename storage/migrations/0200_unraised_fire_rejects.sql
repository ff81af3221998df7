-- Rejects that carried a fire alarm and so raised none. No alarm can come of
-- them, so a person must see them: /health counts those of the last hour
-- (degraded), and the platform dashboard lists them. Two kinds:
--   unregistered: from a device that is not registered (or not at that site):
--     a GB/T 26875.3 frame's fire or manual alarms (named in the reject's
--     detail by the gateway) or a `fire_alarm` / `activated` event;
--   unreadable: from a registered device, but bad input (a firmware slip: a
--     call point's `activated` with `ts` in seconds, no `seq`, "Activated"),
--     or a panel frame whose alarms the gateway could not raise (NOT RAISED).
-- A view, so Grafana, which may not read what devices sent (`payload`, 0050),
-- sees which rejects these are without seeing the payload they were judged on.
CREATE OR REPLACE VIEW unraised_fire_rejects AS
SELECT r.id, r.received_at, r.topic, r.reason, r.device_id, r.detail,
       r.reason IN ('unknown_device', 'site_mismatch') AS unregistered
FROM rejects r
WHERE (r.reason IN ('unknown_device', 'site_mismatch')
       AND (r.detail LIKE '%FIRE ALARMS%' OR r.detail LIKE '%MANUAL ALARMS%'))
   OR r.detail LIKE '%NOT RAISED%'
   -- Any spelling a firmware may slip into: "Activated", "ACTIVATED ",
   -- "Fire_Alarm", "fire alarm" (`_` matches any one character). The payload
   -- may not be UTF-8: read as escaped bytes.
   OR (r.topic LIKE '%/event'
       AND lower(encode(r.payload, 'escape')) SIMILAR TO '%("activated|"fire_alarm)%');

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'firesafe_grafana') THEN
        GRANT SELECT ON unraised_fire_rejects TO firesafe_grafana;
    END IF;
END $$;
