-- A device's own `offline` notification is held for one reporting interval
-- (+5 s, 0160): the device's `interval_s`, or its kind's default when it was
-- registered without one, as ingest supervises it. The hold took 60 s for a
-- device without one: an outside check's smoke detectors (10 s, offline after
-- 30 s) were told 65 s after they went offline instead of 15 s.
-- `firesafe_default_interval_s` is firesafe.contract.DEFAULT_INTERVAL_S (a
-- test compares them). The rest of the trigger function is 0180's.

CREATE OR REPLACE FUNCTION firesafe_default_interval_s(kind text) RETURNS double precision
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE kind
        WHEN 'smoke' THEN 10.0
        WHEN 'heat' THEN 10.0
        WHEN 'multi' THEN 10.0
        WHEN 'mcp' THEN 60.0
        WHEN 'electrical' THEN 10.0
        WHEN 'evac' THEN 60.0
        WHEN 'uitd' THEN 60.0
        WHEN 'panel' THEN 31622400.0
        WHEN 'point' THEN 31622400.0
        ELSE 60.0
    END::double precision
$$;

CREATE OR REPLACE FUNCTION firesafe_notify_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    a alarms%ROWTYPE;
    ev text;
    doc jsonb;
    due timestamptz := clock_timestamp();
    written bigint := 0;
    more bigint;
BEGIN
    -- Most transitions match no rule: leave at once when there is nothing to do.
    IF NEW.action IN ('opened', 'confirmed') AND NOT EXISTS (SELECT 1 FROM notify_rules) THEN
        RETURN NULL;
    END IF;
    SELECT * INTO a FROM alarms WHERE id = NEW.alarm_id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    ev := CASE
        WHEN NEW.action IN ('opened', 'confirmed') AND a.verdict = 'confirmed' THEN 'confirmed'
        WHEN NEW.action = 'opened' AND a.verdict = 'pending' THEN 'opened'
        WHEN NEW.action = 'acknowledged' THEN 'acknowledged'
        WHEN NEW.action IN ('cleared', 'suppressed') THEN 'cleared'
        ELSE NULL
    END;
    IF ev IS NULL THEN
        RETURN NULL;
    END IF;
    doc := firesafe_alarm_document(a);
    IF ev IN ('opened', 'confirmed') THEN
        IF a.type = 'offline' AND a.detail ? 'cause' THEN
            RETURN NULL;
        END IF;
        IF a.type = 'offline' AND a.device_id IS NOT NULL THEN
            -- Held for one reporting interval of the device (at most 5 min): the
            -- time its site or gateway takes to be found silent as a whole,
            -- which then links it (detail.cause) and cancels this (ingest).
            due := due + make_interval(secs => least(300, 5 + (
                SELECT coalesce(d.interval_s, firesafe_default_interval_s(d.kind))
                FROM devices d WHERE d.id = a.device_id)));
        END IF;
        INSERT INTO notifications (alarm_id, log_id, event, target_id, rule_id, alarm, after_id,
                                   next_attempt_at)
        SELECT DISTINCT ON (rt.target_id) a.id, NEW.id, ev, rt.target_id, r.id, doc,
               (SELECT p.id FROM notifications p
                WHERE p.alarm_id = a.id AND p.target_id = rt.target_id
                ORDER BY p.seq DESC LIMIT 1),
               due
        FROM notify_rules r
        JOIN notify_rule_targets rt ON rt.rule_id = r.id AND rt.role = 'notify'
        WHERE (r.sites IS NULL OR a.site_id = ANY (r.sites))
          AND a.type = ANY (r.types) AND firesafe_alarm_notified(a, r.verdicts)
        ORDER BY rt.target_id, r.id
        ON CONFLICT DO NOTHING;
        GET DIAGNOSTICS written = ROW_COUNT;
        IF (ev = 'confirmed' OR a.reason = 'panel_alarm') AND a.status = 'active' THEN
            INSERT INTO notify_escalations (alarm_id, rule_id, every_s, next_at)
            SELECT a.id, r.id, r.escalate_after_s,
                   due + make_interval(secs => r.escalate_after_s)  -- after the hold
            FROM notify_rules r
            WHERE r.escalate_after_s IS NOT NULL
              AND (r.sites IS NULL OR a.site_id = ANY (r.sites))
              AND a.type = ANY (r.types) AND firesafe_alarm_notified(a, r.verdicts)
              AND EXISTS (SELECT 1 FROM notify_rule_targets rt
                          WHERE rt.rule_id = r.id AND rt.role = 'escalate')
            ON CONFLICT DO NOTHING;
            GET DIAGNOSTICS more = ROW_COUNT;
            written := written + more;
        END IF;
    ELSE
        -- Stop escalating first: this waits for a notifier escalating the alarm
        -- right now, whose rows the next statement then sees and cancels.
        DELETE FROM notify_escalations WHERE alarm_id = a.id;
        IF a.type = 'offline' AND a.device_id IS NOT NULL THEN
            -- Back before its held notification went out: nobody was told, so
            -- nobody is told it is over (a device that drops off for a moment).
            PERFORM firesafe_cancel_held_notifications(a.id, 'back online before it was sent');
        END IF;
        -- Escalations not sent yet are cancelled, those being attempted right
        -- now too: the attempt under way ends as it ends (delivered, or not
        -- retried), and what follows for its target waits for it.
        UPDATE notifications
        SET status = 'cancelled', last_error = 'alarm ' || ev || ' before delivery'
        WHERE alarm_id = a.id AND event = 'escalated' AND status = 'pending';
        -- To every target that was told of the alarm or may still be: one of
        -- its notifications was delivered, still waits, or is being attempted.
        -- Whether it was told is settled when this one's turn comes (storage/
        -- queries/notifications.py, claim): not told, it is cancelled.
        INSERT INTO notifications (alarm_id, log_id, event, target_id, rule_id, alarm, after_id)
        SELECT DISTINCT ON (n.target_id) a.id, NEW.id, ev, n.target_id, n.rule_id, doc, n.id
        FROM notifications n
        WHERE n.alarm_id = a.id AND n.log_id IS DISTINCT FROM NEW.id
          AND (n.status = 'pending' OR n.delivered_at IS NOT NULL OR n.lease_until IS NOT NULL)
        ORDER BY n.target_id, n.seq DESC
        ON CONFLICT DO NOTHING;
        GET DIAGNOSTICS written = ROW_COUNT;
    END IF;
    IF written > 0 THEN
        -- Delivered at commit only: a notifier never wakes for a rolled-back transition.
        PERFORM pg_notify('firesafe_notify', '');
    END IF;
    RETURN NULL;
END $$;
