-- A smoke chamber's drift-compensation baseline (%/m, detection/params.py
-- DRIFT_*): learnt at most 0.1 %/m an hour, so a restart or a shard takeover
-- that started it again from clean air would leave a dirty detector closer to
-- its alarm level for hours and drop its drift fault. Ingest writes it when it
-- moves (once an hour at most per device) and gives it back to detection.
-- Both flavours.
ALTER TABLE device_state ADD COLUMN IF NOT EXISTS drift_baseline double precision;
