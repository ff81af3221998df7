-- Notifications: targets, rules, the outbox and its audit (docs/notifications.md).
--
-- The outbox is written by a trigger on alarm_log, in the transaction of the
-- alarm transition itself, whoever writes it (ingest, supervision, the API):
-- a rolled-back transition leaves no notification behind, and a committed
-- one always has its rows. The notifier (`firesafe notify`) only delivers.

-- Where notifications go. Only firesafe's own role reads this table (URLs and
-- secrets), see the REVOKE at the end.
CREATE TABLE notify_targets (
    id            text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_-]{1,64}$'),
    kind          text NOT NULL CHECK (kind IN ('webhook', 'email')),
    url           text,
    address       text,
    secret        text,            -- HMAC key of webhook signatures; never returned by the API
    language      text NOT NULL DEFAULT 'en' CHECK (language IN ('en', 'zh')),
    template      text,            -- webhook body template (SMS/voice gateways); NULL: JSON document
    content_type  text,            -- of the templated body
    owner_sites   text[],          -- NULL: an admin's (every site); else the manager's sites
    created_by    text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'webhook') = (url IS NOT NULL)),
    CHECK ((kind = 'email') = (address IS NOT NULL))
);

-- Which alarm transitions go where. sites NULL: every site (admins only).
CREATE TABLE notify_rules (
    id                text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_-]{1,64}$'),
    sites             text[],
    types             text[] NOT NULL CHECK (cardinality(types) > 0),
    verdicts          text[] NOT NULL DEFAULT '{confirmed}',
    escalate_after_s  integer CHECK (escalate_after_s > 0),
    owner_sites       text[],
    created_by        text,
    created_at        timestamptz NOT NULL DEFAULT now()
);

-- A rule's targets (role 'notify') and escalation targets (role 'escalate').
-- A target still used by a rule cannot be deleted.
CREATE TABLE notify_rule_targets (
    rule_id    text NOT NULL REFERENCES notify_rules (id) ON DELETE CASCADE,
    target_id  text NOT NULL REFERENCES notify_targets (id) ON DELETE RESTRICT,
    role       text NOT NULL CHECK (role IN ('notify', 'escalate')),
    PRIMARY KEY (rule_id, role, target_id)
);
CREATE INDEX notify_rule_targets_target_idx ON notify_rule_targets (target_id);

-- The outbox: one row per (alarm transition, target); its id is the delivery
-- id, the same on every attempt (X-Firesafe-Delivery).
CREATE TABLE notifications (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    seq               bigint GENERATED ALWAYS AS IDENTITY UNIQUE,  -- order per alarm and target
    alarm_id          text NOT NULL REFERENCES alarms (id) ON DELETE CASCADE,
    log_id            bigint,        -- the alarm_log transition (NULL for escalations)
    event             text NOT NULL
                      CHECK (event IN ('opened', 'confirmed', 'escalated', 'acknowledged', 'cleared')),
    escalation        integer NOT NULL DEFAULT 0,   -- 1, 2, ... for escalations
    target_id         text NOT NULL,                -- no FK: the audit outlives a deleted target
    rule_id           text,
    -- The notification of the same alarm and target this one must follow (an
    -- acknowledgement never overtakes the confirmation): it waits while that
    -- one is pending. A primary-key lookup, whatever the planner knows.
    after_id          uuid,
    alarm             jsonb NOT NULL,               -- the alarm as the API showed it at the transition
    status            text NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'delivered', 'failed', 'cancelled')),
    attempts          integer NOT NULL DEFAULT 0,
    created_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    next_attempt_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    lease_until       timestamptz,   -- claimed by a notifier until then
    claimed_by        text,
    claim_key         bigint,        -- the claimant's advisory lock: a dead notifier's claims return
    first_attempt_at  timestamptz,
    last_attempt_at   timestamptz,
    last_status       integer,       -- HTTP status or SMTP reply code
    last_error        text,
    delivered_at      timestamptz
);
CREATE UNIQUE INDEX notifications_transition_idx ON notifications (log_id, target_id)
    WHERE log_id IS NOT NULL;
CREATE UNIQUE INDEX notifications_escalation_idx ON notifications (alarm_id, rule_id, escalation, target_id)
    WHERE event = 'escalated';
CREATE INDEX notifications_alarm_idx ON notifications (alarm_id, target_id, seq);
CREATE INDEX notifications_due_idx ON notifications (next_attempt_at) WHERE status = 'pending';
CREATE INDEX notifications_target_due_idx ON notifications (target_id, next_attempt_at)
    WHERE status = 'pending';
-- The table fills in bursts (an alarm storm): keep its statistics fresh.
ALTER TABLE notifications SET (autovacuum_analyze_scale_factor = 0.02,
                               autovacuum_analyze_threshold = 200);

-- Every attempt, for the audit (GET /api/v1/alarms/{id}/notifications).
CREATE TABLE notification_attempts (
    notification_id  uuid NOT NULL REFERENCES notifications (id) ON DELETE CASCADE,
    attempt          integer NOT NULL,
    at               timestamptz NOT NULL,
    duration_ms      double precision,
    status           integer,
    error            text,
    notifier         text,
    PRIMARY KEY (notification_id, attempt)
);

-- Confirmed alarms whose rule escalates, until acknowledged or cleared.
CREATE TABLE notify_escalations (
    alarm_id  text NOT NULL REFERENCES alarms (id) ON DELETE CASCADE,
    rule_id   text NOT NULL REFERENCES notify_rules (id) ON DELETE CASCADE,
    every_s   integer NOT NULL CHECK (every_s > 0),
    level     integer NOT NULL DEFAULT 1,     -- the next escalation's number
    next_at   timestamptz NOT NULL,
    PRIMARY KEY (alarm_id, rule_id)
);
CREATE INDEX notify_escalations_due_idx ON notify_escalations (next_at);

-- Monotonic counters for /metrics (the table of notifications is not counted at scrape time).
CREATE TABLE notify_counts (
    kind     text NOT NULL,       -- webhook, email
    outcome  text NOT NULL,       -- delivered, attempt_failed, gave_up
    count    bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (kind, outcome)
);
-- Transition -> delivered latency histogram: count of deliveries with latency <= le
-- (bounds: storage/queries/notifications.py LATENCY_BUCKETS_S).
CREATE TABLE notify_latency (
    le     double precision PRIMARY KEY,   -- seconds; 'Infinity' is the +Inf bucket
    count  bigint NOT NULL DEFAULT 0,
    sum_s  double precision NOT NULL DEFAULT 0
);

-- The alarm as GET /api/v1/alarms shows it (api/render.py), for the outbox.
CREATE FUNCTION firesafe_alarm_document(a alarms) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', a.id, 'type', a.type, 'verdict', a.verdict, 'status', a.status,
        'device', a.device_id, 'site', a.site_id, 'building', a.building, 'floor', a.floor,
        'zone', a.zone, 'reason', a.reason, 'acknowledged_by', a.acknowledged_by,
        'cleared_by', a.cleared_by, 'detail', a.detail,
        'opened_at', to_char(a.opened_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
        'confirmed_at', to_char(a.confirmed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
        'cleared_at', to_char(a.cleared_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
        'acknowledged_at', to_char(a.acknowledged_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
        'updated_at', to_char(a.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'))
$$;

-- The outbox writer: runs for every alarm_log row, in its transaction.
--   opened (pending)              -> 'opened'    to the targets of matching rules
--   opened confirmed / confirmed  -> 'confirmed' to the targets of matching rules,
--                                    and escalation scheduled for rules that escalate
--   acknowledged                  -> 'acknowledged' to every target told of the alarm before
--   cleared / suppressed          -> 'cleared'      to every target told of the alarm before
-- An acknowledgement or clearing stops escalation and cancels escalations not yet sent.
-- Offline alarms carrying detail.cause are members of a grouped storm (the
-- site/gateway alarm is notified instead): they are not notified.
CREATE FUNCTION firesafe_notify_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    a alarms%ROWTYPE;
    ev text;
    doc jsonb;
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
        INSERT INTO notifications (alarm_id, log_id, event, target_id, rule_id, alarm, after_id)
        SELECT DISTINCT ON (rt.target_id) a.id, NEW.id, ev, rt.target_id, r.id, doc,
               (SELECT p.id FROM notifications p
                WHERE p.alarm_id = a.id AND p.target_id = rt.target_id
                ORDER BY p.seq DESC LIMIT 1)
        FROM notify_rules r
        JOIN notify_rule_targets rt ON rt.rule_id = r.id AND rt.role = 'notify'
        WHERE (r.sites IS NULL OR a.site_id = ANY (r.sites))
          AND a.type = ANY (r.types) AND a.verdict = ANY (r.verdicts)
        ORDER BY rt.target_id, r.id
        ON CONFLICT DO NOTHING;
        GET DIAGNOSTICS written = ROW_COUNT;
        IF ev = 'confirmed' AND a.status = 'active' THEN
            INSERT INTO notify_escalations (alarm_id, rule_id, every_s, next_at)
            SELECT a.id, r.id, r.escalate_after_s,
                   clock_timestamp() + make_interval(secs => r.escalate_after_s)
            FROM notify_rules r
            WHERE r.escalate_after_s IS NOT NULL
              AND (r.sites IS NULL OR a.site_id = ANY (r.sites))
              AND a.type = ANY (r.types) AND a.verdict = ANY (r.verdicts)
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
        UPDATE notifications
        SET status = 'cancelled', last_error = 'alarm ' || ev || ' before delivery'
        WHERE alarm_id = a.id AND event = 'escalated' AND status = 'pending'
          AND (lease_until IS NULL OR lease_until < clock_timestamp());
        INSERT INTO notifications (alarm_id, log_id, event, target_id, rule_id, alarm, after_id)
        SELECT DISTINCT ON (n.target_id) a.id, NEW.id, ev, n.target_id, n.rule_id, doc, n.id
        FROM notifications n
        WHERE n.alarm_id = a.id AND n.status <> 'cancelled' AND n.log_id IS DISTINCT FROM NEW.id
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

CREATE TRIGGER alarm_log_notify_outbox AFTER INSERT ON alarm_log
    FOR EACH ROW EXECUTE FUNCTION firesafe_notify_outbox();

-- Least-privilege roles (migration 0050): dashboards read the outbox (the
-- Operations overview shows what is undelivered) but never the targets, whose
-- URLs carry tokens and whose secrets sign webhooks; ingest writes the outbox
-- through the trigger and has no use for targets either. The API (and the
-- notifier, which logs in as it) keeps its default privileges.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'firesafe_grafana') THEN
        GRANT SELECT ON notifications TO firesafe_grafana;
        REVOKE ALL ON notify_targets FROM firesafe_grafana;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'firesafe_ingest') THEN
        REVOKE ALL ON notify_targets FROM firesafe_ingest;
    END IF;
END $$;
