-- A panel's fire alarm is told at once. A `fire` or `electrical` alarm that a
-- fire alarm control panel raised (GB/T 26875.3 gateway: reason `panel_alarm`)
-- stays `pending` until a second point of its zone, a call point or a person
-- corroborates it, and it is never confirmed by time. Under rules with the
-- default verdicts (`confirmed`) nobody was told of it: an outside check found
-- one pending for 13 minutes, no notification, no escalation. It is the
-- panel's own alarm (a certified control panel has sounded it on site) and
-- waits for the centre's duty operator, who must verify it with the site at
-- once before it is passed on as a confirmed fire (GB 50440, GB 25506): the
-- people the centre notifies of fires must hear of it now. So such an alarm
-- is notified when it opens (event `opened`, verdict `pending`) to every rule
-- whose verdicts include `confirmed` (as to those that include `pending`), and
-- its escalation starts then: still active (not acknowledged, not cleared)
-- `escalate_after_s` later, it goes to `escalate_to`. A person's verdict then
-- is told as usual (`confirmed`; a dismissal or the panel's reset `cleared`);
-- the escalation already running goes on (confirming is not acknowledging).
-- Nothing else changes: a detector's own pending window is still told only to
-- rules asking for `pending`.
--
-- Also, who is "told" of an alarm, and escalations in order.
--
-- An outside check: a webhook down, a call point activated, then acknowledged
-- and cleared; the escalation target's escalation was being attempted when
-- the acknowledgement came (so it was neither cancelled nor left out of the
-- `acknowledged`), was cancelled by the clearing, and the target then got
-- `acknowledged` and `cleared` of an alarm it had never heard of.
--
-- Now (docs/notifications.md, "What is sent, and when"):
-- - a target is told of an alarm when a notification of it was delivered to
--   it. `acknowledged` and `cleared` are written for every target that was
--   told or may still be (one of its notifications delivered, waiting or
--   being attempted) and, when their turn comes, cancelled if it was not
--   told after all (the notifier's claim: storage/queries/notifications.py);
-- - escalations being attempted are cancelled by an acknowledgement or a
--   clearing too (the attempt under way still ends delivered or not; it is
--   not retried), and by the next escalation (the notifier's escalate_due);
-- - per alarm and target, a notification waits while any earlier one is
--   waiting or being attempted (escalations included, whose after_id used to
--   skip the escalations before them); after_id stays as the audit's "follows".
-- The rest of the function is 0160's.

CREATE OR REPLACE FUNCTION firesafe_alarm_notified(a alarms, verdicts text[]) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT a.verdict = ANY (verdicts)
        OR (a.verdict = 'pending' AND a.reason = 'panel_alarm' AND 'confirmed' = ANY (verdicts))
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
            due := due + make_interval(secs => least(300, 5 + coalesce(
                (SELECT d.interval_s FROM devices d WHERE d.id = a.device_id), 60)));
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
