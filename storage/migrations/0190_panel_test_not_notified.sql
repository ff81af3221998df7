-- A walk test's alarm is told to no one. A fire panel reports a point in alarm
-- while in test mode (GB/T 26875.3 status bit 0 clear) as `panel_test`: the
-- alarm stays `pending` for a person, and an outside check found it notified,
-- `opened` and then `cleared`, to every rule asking for `pending` (with no
-- word of a test in the subject). It is now told to no rule while pending; a
-- person who confirms it makes it a confirmed fire, told as any other. (Not
-- told, its clearing is told to no one either: only targets told of an alarm
-- hear it end, 0180.)

CREATE OR REPLACE FUNCTION firesafe_alarm_notified(a alarms, verdicts text[]) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT (a.verdict = ANY (verdicts) AND NOT (a.verdict = 'pending' AND a.reason = 'panel_test'))
        OR (a.verdict = 'pending' AND a.reason = 'panel_alarm' AND 'confirmed' = ANY (verdicts))
$$;
