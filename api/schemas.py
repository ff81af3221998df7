"""Request and response bodies: the OpenAPI schema is generated from these."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    WithJsonSchema,
    computed_field,
    model_validator,
)

from api.errors import localize, request_lang
from api.params import ID_REGEX, NAME_REGEX
from detection.params import DRIFT_LIMIT_MAX_FRACTION, THRESHOLD_DEFAULTS, THRESHOLD_LIMITS
from firesafe.contract import DEFAULT_INTERVAL_S, GATEWAY_SITE
from firesafe.i18n import DEFAULT_LANG, label
from storage.queries.tokens import is_reserved_name


def iso_ms(value: datetime) -> str:
    """ISO 8601 UTC with milliseconds: 2026-11-25T22:31:06.123Z."""
    # isoformat pads the year to 4 digits (strftime's %Y does not for year 1).
    utc = value.astimezone(UTC).replace(tzinfo=None)
    return utc.isoformat(timespec="milliseconds") + "Z"


Timestamp = Annotated[
    datetime,
    PlainSerializer(iso_ms, return_type=str),
    WithJsonSchema(
        {"type": "string", "format": "date-time", "examples": ["2026-11-25T22:31:06.123Z"]}
    ),
]
Id = Annotated[str, StringConstraints(pattern=ID_REGEX)]


def not_reserved_site(site: str) -> str:
    """`_gateway` is where gateways' own rejects live (contract), never a site."""
    if site == GATEWAY_SITE:
        raise ValueError(f"the site id {site} is reserved (gateways' own rejects)")
    return site


def no_nul(text: str) -> str:
    """PostgreSQL's text holds no NUL: refused here, by name, not by the database
    ("a value is out of the range the database accepts": an outside check)."""
    if "\x00" in text:
        raise ValueError("must not contain a NUL character")
    return text


# Free text (names, templates, secrets): anything but NUL.
Text = Annotated[str, AfterValidator(no_nul)]

# A site a caller may create or be given: an id, but not the gateways' own.
SiteId = Annotated[str, StringConstraints(pattern=ID_REGEX), AfterValidator(not_reserved_site)]
Name = Annotated[str, StringConstraints(pattern=NAME_REGEX)]
Kind = Literal["smoke", "heat", "multi", "mcp", "electrical", "evac", "uitd", "panel", "point"]
_ENDS_IN_NUMBER = re.compile(r"_[0-9]+$")
# GB/T 26875.3 source address: 6 bytes as 12 hex digits, most significant first.
Address = Annotated[str, StringConstraints(pattern=r"^[0-9A-Fa-f]{12}$", to_upper=True)]
UtcOffset = Annotated[int, Field(ge=-720, le=840)]
AlarmType = Literal["fire", "pre_alarm", "electrical", "fault", "offline", "evac_fault"]
Verdict = Literal["pending", "confirmed", "suppressed"]
# contract.REJECT_REASONS (a test keeps them equal)
RejectReason = Literal[
    "too_large",
    "bad_topic",
    "invalid_json",
    "missing_ts",
    "missing_seq",
    "bad_value",
    "bad_payload",
    "unknown_device",
    "site_mismatch",
    "bad_frame",
    "unsupported",
]
Status = Literal["active", "acknowledged", "cleared"]
Role = Literal["admin", "operator", "manager"]
SiteStandard = Literal["EN", "GB"]
DeviceState = Literal["online", "offline", "unknown"]
ThresholdName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]

# A year: anything longer is a typo, not a reporting period.
MAX_INTERVAL_S = 366 * 86_400.0

T = TypeVar("T")

_LABEL_NOTE = " in the request's language (Accept-Language: en or zh-CN); the code is unchanged"


def _label(vocabulary: str, code: str) -> str:
    return label(vocabulary, code, request_lang.get())


class Page(BaseModel, Generic[T]):
    """A list response: follow `next_cursor` (null on the last page)."""

    items: list[T]
    next_cursor: str | None


# --- devices -----------------------------------------------------------------


class Routes(BaseModel):
    """Evacuation routes of a dynamic exit sign: zones of its own building and floor."""

    model_config = ConfigDict(extra="forbid")
    left: Name | None = None
    right: Name | None = None


class DeviceIn(BaseModel):
    """A device to register or update (upsert by `id`)."""

    id: Id
    site: SiteId
    building: Name
    floor: Name
    zone: Name
    kind: Kind
    name: Annotated[str, StringConstraints(pattern=r"^[^\x00]{0,200}$")] | None = None
    interval_s: Annotated[float, Field(ge=1, le=MAX_INTERVAL_S, allow_inf_nan=False)] | None = (
        Field(
            default=None,
            description="Reporting period in seconds; offline after 3 x this of silence. "
            "Default per kind: " + ", ".join(f"{k} {v:g}" for k, v in DEFAULT_INTERVAL_S.items()),
        )
    )
    thresholds: dict[ThresholdName, Number] | None = Field(
        default=None,
        description="Thresholds overriding the kind's defaults, name -> finite, "
        "non-negative number; a name the kind does not have is refused (422). "
        "Defaults (detection.params): "
        + "; ".join(
            f"{kind}: " + ", ".join(f"{name}={value:g}" for name, value in names.items())
            for kind, names in THRESHOLD_DEFAULTS.items()
        ),
    )
    routes: Routes | None = Field(
        default=None, description="evac only: zones of the same building and floor"
    )
    address: Address | None = Field(
        default=None,
        description="uitd only (required): the transmission device's 6-byte GB/T 26875.3 "
        "source address as 12 hex digits, most significant first",
    )
    utc_offset_min: UtcOffset | None = Field(
        default=None,
        description="uitd only: offset of the device's clock (its time labels) from UTC in "
        "minutes; default 480 (UTC+8)",
    )

    @model_validator(mode="after")
    def _routes_only_for_evac(self) -> DeviceIn:
        if self.routes is not None and self.kind != "evac":
            raise ValueError("routes are only for evac devices")
        if self.kind == "uitd" and self.address is None:
            raise ValueError("a uitd needs its `address` (12 hex digits)")
        if self.kind == "uitd" and _ENDS_IN_NUMBER.search(self.id):
            # Its points are `{id}_{system}_{address}_{point}`: a uitd `Q_1`'s
            # panel `Q_1_1_1` would be uitd `Q`'s point 1/1/1.
            raise ValueError(
                "a uitd id must not end in `_` and digits (its points' ids would collide with "
                "another uitd's)"
            )
        if self.kind != "uitd" and (self.address is not None or self.utc_offset_min is not None):
            raise ValueError("address and utc_offset_min are only for uitd devices")
        return self

    @model_validator(mode="after")
    def _known_thresholds(self) -> DeviceIn:
        known = THRESHOLD_DEFAULTS.get(self.kind, {})  # gateway kinds have none
        for name, value in (self.thresholds or {}).items():
            if name not in known:
                allowed = ", ".join(sorted(known)) or "none"
                raise ValueError(
                    f"thresholds.{name}: not a threshold of a {self.kind} device (known: {allowed})"
                )
            if value < 0:
                raise ValueError(f"thresholds.{name}: must not be negative (got {value:g})")
            low, high = THRESHOLD_LIMITS.get(name, (0.0, math.inf))
            if not low <= value <= high:
                raise ValueError(f"thresholds.{name}: must be within {low:g}-{high:g}")
        given = self.thresholds or {}
        if "drift_limit" in given:
            alarm = given.get("obscuration_alarm", known["obscuration_alarm"])
            cap = DRIFT_LIMIT_MAX_FRACTION * alarm
            if given["drift_limit"] > cap:
                raise ValueError(
                    f"thresholds.drift_limit: at most {DRIFT_LIMIT_MAX_FRACTION:g} x "
                    f"obscuration_alarm ({cap:g}): EN 54-7 4.8 lets drift compensation "
                    "raise the response threshold by a factor of 1.6 at most"
                )
        return self


class Aggregate(BaseModel):
    min: float
    max: float
    avg: float
    n: int = Field(description="Number of readings in the bucket")


class Reading(BaseModel):
    ts: Timestamp
    seq: int
    v: dict[str, float]


class Bucket(BaseModel):
    ts: Timestamp = Field(description="Start of the bucket")
    v: dict[str, Aggregate]


class DeviceOut(BaseModel):
    id: str
    site: str
    building: str
    floor: str
    zone: str
    kind: Kind
    name: str | None
    interval_s: float = Field(description="Reporting period (the kind's default when not set)")
    thresholds: dict[str, float]
    routes: Routes | None
    address: str | None = Field(default=None, description="uitd: GB/T 26875.3 source address")
    utc_offset_min: int | None = Field(default=None, description="uitd: clock offset from UTC")
    state: DeviceState = Field(
        description="offline: an open offline alarm or status topic says offline; "
        "unknown: nothing received yet"
    )
    last_seen_at: Timestamp | None = Field(description="Arrival time of the newest message")
    created_at: Timestamp
    updated_at: Timestamp

    @computed_field(description="Label of `kind`" + _LABEL_NOTE)  # type: ignore[prop-decorator]
    @property
    def kind_label(self) -> str:
        return _label("kind", self.kind)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> DeviceOut:
        return cls(
            **{
                k: row[k]
                for k in (
                    "id",
                    "site",
                    "building",
                    "floor",
                    "zone",
                    "kind",
                    "name",
                    "thresholds",
                    "routes",
                    "address",
                    "utc_offset_min",
                    "state",
                    "last_seen_at",
                    "created_at",
                    "updated_at",
                )
            },
            interval_s=row["interval_s"] or DEFAULT_INTERVAL_S[row["kind"]],
        )


# --- alarms ------------------------------------------------------------------


class AlarmOut(BaseModel):
    id: str
    type: AlarmType
    verdict: Verdict
    status: Status
    device: str | None = Field(
        description="The device; null for a site- or gateway-level alarm (an `offline` "
        "with reason `site_silent`: most of the site fell silent together, or "
        "`gateway_silent`: most of the devices behind the gateway `detail.gateway`; their "
        "own offline alarms carry `detail.cause` = this alarm's id)"
    )
    site: str
    building: str
    floor: str
    zone: str
    reason: str
    opened_at: Timestamp
    confirmed_at: Timestamp | None
    cleared_at: Timestamp | None
    acknowledged_at: Timestamp | None
    acknowledged_by: str | None
    cleared_by: str | None
    detail: dict[str, Any]
    updated_at: Timestamp

    @computed_field(description="Label of `type`" + _LABEL_NOTE)  # type: ignore[prop-decorator]
    @property
    def type_label(self) -> str:
        return _label("alarm_type", self.type)

    @computed_field(description="Label of `verdict`" + _LABEL_NOTE)  # type: ignore[prop-decorator]
    @property
    def verdict_label(self) -> str:
        return _label("verdict", self.verdict)

    @computed_field(description="Label of `status`" + _LABEL_NOTE)  # type: ignore[prop-decorator]
    @property
    def status_label(self) -> str:
        return _label("status", self.status)

    @computed_field(description="Label of `reason`" + _LABEL_NOTE)  # type: ignore[prop-decorator]
    @property
    def reason_label(self) -> str:
        return _label("reason", self.reason)


class _LogNote(BaseModel):
    """A log entry's actor and note, with the note as a person reads it."""

    actor: str
    note: str | None

    @computed_field(  # type: ignore[prop-decorator]
        description="`note` as a person reads it: the system's codes (`pending: obscuration`) "
        "as labels" + _LABEL_NOTE + "; a person's note as written"
    )
    @property
    def note_label(self) -> str | None:
        if self.actor != "system" or not self.note:
            return self.note
        verdict, sep, reason = self.note.partition(": ")
        if not sep:
            return _label("reason", self.note)
        colon = "：" if request_lang.get() != DEFAULT_LANG else ": "
        return f"{_label('verdict', verdict)}{colon}{_label('reason', reason)}"


class AlarmLogEntry(_LogNote):
    id: int
    at: Timestamp
    action: str


class DeviceEvent(BaseModel):
    ts: Timestamp
    seq: int
    received_at: Timestamp
    type: str
    detail: str | None


class Evidence(BaseModel):
    """The device's readings and events around the alarm."""

    since: Timestamp
    until: Timestamp
    readings: list[Reading]
    events: list[DeviceEvent]


class LinkageCommand(BaseModel):
    """An evacuation command the alarm caused: `pending` until the broker has
    acknowledged it, `superseded` when a newer state replaced it before that."""

    id: int
    at: Timestamp
    device: str
    cmd: Literal["emergency", "normal"]
    direction: str | None
    state: Literal["pending", "acknowledged", "superseded"]
    attempts: int
    sent_at: Timestamp | None
    acked_at: Timestamp | None


class AlarmDetail(AlarmOut):
    log: list[AlarmLogEntry]
    commands: list[LinkageCommand]
    evidence: Evidence


class NoteIn(BaseModel):
    note: Annotated[str, StringConstraints(pattern=r"^[^\x00]{0,2000}$")] | None = None


class AlarmChange(_LogNote):
    """One Server-Sent Event: an alarm_log entry and the alarm as it is now."""

    log_id: int
    at: Timestamp
    action: str
    alarm: AlarmOut


class LinkStats(BaseModel):
    """What ingest counted of the device's messages (folded in every few seconds):
    a device maker's first look at lost, repeated and mis-dated messages."""

    messages: int = Field(
        description="Messages received (readings and events, duplicates included)"
    )
    seq_gaps: int = Field(
        description="Messages missing according to seq when a later one arrived (lost on the "
        "way, or late: one that arrives later is not taken back)"
    )
    duplicates: int = Field(description="The same seq and ts again, stored once")
    out_of_order: int = Field(
        description="Messages older than the newest already received: stored; a reading so "
        "late is kept out of detection. After one dated ahead (see quarantined) the next "
        "ones count here until the clock passes it"
    )
    quarantined: int = Field(
        description="Readings dated more than 30 s ahead of the device's clock and the "
        "platform's: stored, kept out of detection (a clock off, or one glitch)"
    )
    clock_ahead_s: float | None = Field(
        description="The newest event time processed minus the arrival time of the newest "
        "message: how far the device's clock runs ahead (negative: behind, or its messages "
        "arrive late); its alarms carry its clock's times. None: nothing received yet"
    )


class DeviceDetail(DeviceOut):
    last_ts: Timestamp | None = Field(description="Newest event time processed")
    on_mains: bool | None
    last_reading: Reading | None
    open_alarms: list[AlarmOut]
    link: LinkStats


# --- telemetry, rejects ------------------------------------------------------


class TelemetryPage(BaseModel):
    """Raw readings (`bucket` null) or buckets with min/avg/max per reading."""

    bucket: Literal["1m", "5m", "1h", "1d"] | None
    items: list[Reading] | list[Bucket]
    next_cursor: str | None


class RejectOut(BaseModel):
    id: str
    received_at: Timestamp
    topic: str
    reason: str
    payload: str
    encoding: Literal["utf-8", "base64"] = Field(
        description="base64 when the payload is not valid UTF-8"
    )
    detail: str | None
    device: str | None
    payload_size: int = Field(
        description="The payload's full length in bytes; `payload` keeps at most its "
        "first 4 KiB (shorter than this: cut)"
    )

    @computed_field(description="Label of `reason`" + _LABEL_NOTE)  # type: ignore[prop-decorator]
    @property
    def reason_label(self) -> str:
        return _label("reject_reason", self.reason)

    @computed_field(  # type: ignore[prop-decorator]
        description="`detail` in the request's language (Accept-Language: en or zh-CN); "
        "the GB/T 26875.3 gateway's too, clause by clause"
    )
    @property
    def detail_label(self) -> str | None:
        if self.detail is None:
            return None
        return localize(self.detail, request_lang.get()) or self.detail


# --- tokens ------------------------------------------------------------------


class TokenIn(BaseModel):
    role: Role
    sites: list[SiteId] = Field(
        default_factory=list,
        max_length=1000,
        description="Sites of a manager token (required for managers)",
    )
    name: Name = Field(
        description="Recorded as who acknowledged or cleared an alarm; `system` and "
        "`admin` are reserved"
    )
    expires_at: Timestamp | None = Field(
        default=None, description="When the token stops working (401 after); null: never"
    )

    @model_validator(mode="after")
    def _sites_for_managers(self) -> TokenIn:
        if is_reserved_name(self.name):
            raise ValueError(f"the name {self.name.strip()!r} is reserved (the system's own actor)")
        if self.expires_at is not None:
            if self.expires_at.tzinfo is None:
                self.expires_at = self.expires_at.replace(tzinfo=UTC)
            if self.expires_at <= datetime.now(UTC):
                raise ValueError("expires_at must be in the future")
        if self.role == "manager" and not self.sites:
            raise ValueError("a manager token needs at least one site")
        if self.role != "manager" and self.sites:
            raise ValueError("sites apply to manager tokens only (admin and operator see all)")
        return self


class TokenCreated(BaseModel):
    token: str = Field(description="Shown once; only its hash is stored")
    id: str
    role: Role
    sites: list[str]
    name: str
    expires_at: Timestamp | None = None


class TokenOut(BaseModel):
    id: str
    name: str
    role: Role
    sites: list[str]
    created_by: str | None
    created_at: Timestamp
    revoked_at: Timestamp | None
    expires_at: Timestamp | None = None


# --- operations --------------------------------------------------------------


# A pending notification due longer than this, or claimed by a notifier that
# stopped renewing its claim (a 15 s lease) this long ago, is not being delivered.
NOTIFICATIONS_OVERDUE_S = 30


class DatabaseHealth(BaseModel):
    ok: bool
    latency_ms: float | None
    error: str | None = Field(
        default=None, description="Why it did not answer: the kind of error (`PoolTimeout`, ...)"
    )
    error_detail: str | None = Field(
        default=None,
        description="What a fresh connection attempt said (`connection refused`, a "
        "password refused, ...); shown only with the admin token (FIRESAFE_ADMIN_TOKEN): "
        "operator tokens live in the database that does not answer",
    )
    flavour: Literal["plain", "timescale"] | None = Field(
        default=None,
        description="The storage flavour chosen at the database's first migration, for good",
    )


class BrokerHealth(BaseModel):
    connected: bool | None = Field(
        description="As ingest last reported it; null when no ingest reported recently"
    )


class IngestHealth(BaseModel):
    state: Literal["ok", "stale", "absent", "unknown"] = Field(
        description="ok: reported within the staleness limit; stale: older; "
        "absent: no report in the last 10 minutes; unknown: database down"
    )
    last_report_at: Timestamp | None
    age_s: float | None
    lag_ms: float | None = Field(description="Largest lag over reporting instances")
    queue_depth: int | None = Field(description="Sum over reporting instances")
    instances: int


class JobHealth(BaseModel):
    """A background job: TimescaleDB's compression, rollup refresh and retention;
    on plain PostgreSQL the rollup refresh that ingest's housekeeping runs."""

    job_id: int
    job: str = Field(description="The job's name, e.g. 'Retention Policy [1002]'")
    target: str | None = Field(
        description="The table or continuous aggregate it works on (null: a user job)"
    )
    last_run_status: str | None = Field(description="Success, Failed, or null before a run")
    job_status: str | None = Field(
        default=None,
        description="Scheduled, Running or Paused (TimescaleDB); a job that no scheduler "
        "runs, or that is paused, is failed too, with what to do in `last_error`",
    )
    total_runs: int
    total_failures: int
    last_successful_finish: Timestamp | None
    last_error: str | None = Field(description="The newest recorded error of the job")
    last_error_at: Timestamp | None


class ShardProcess(BaseModel):
    instance: str | None = Field(description="host:pid of the ingest process (its last report)")
    backend_pid: int = Field(description="Its database session, which holds its leases")
    shards: list[int]
    takeovers: int | None = Field(description="Shards it has taken over since it started")
    report_age_s: float | None = Field(
        description="Seconds since its last report (null: none yet); a holder silent for "
        "long is stopped or wedged, and another process ends its session after 60 s"
    )


class ShardsHealth(BaseModel):
    count: int = Field(description="Shards of the estate (fixed at the first migration)")
    owned: int = Field(description="Shards held by a live ingest process now")
    unowned: list[int] = Field(description="Shards nobody holds: their sites are not processed")
    stalled: list[int] = Field(
        description="Shards held by a process that has stopped reporting: their sites "
        "are not processed until it resumes or another process takes them over"
    )
    processes: list[ShardProcess]


class StreamHealth(BaseModel):
    listening: bool = Field(
        description="The API's LISTEN connection is up: live alarm streams work"
    )
    clients: int = Field(description="Open alarm streams in this API process")


class TaskHealth(BaseModel):
    state: Literal["starting", "running", "restarting", "stopped"]
    restarts: int
    last_error: str | None


# A fire or call point that reached the platform only as a reject (a device
# nobody registered, or bad input): /health says so for this long after it.
UNRAISED_FIRES_WITHIN_S = 3600


class UnraisedFires(BaseModel):
    """Fire alarms that reached the platform and raised no alarm: only rejects."""

    count: int = Field(
        description=f"Such rejects of the last {UNRAISED_FIRES_WITHIN_S // 60} minutes. "
        "Somebody must call that building, then fix the cause (GET /api/v1/rejects "
        "names each, with why)"
    )
    last_at: Timestamp | None = Field(description="When the latest one arrived")
    last_topic: str | None = Field(
        description="Its topic (names the site and device; shown with a token)"
    )
    last_detail: str | None = Field(description="What it carried (shown with a token)")


class NotificationsHealth(BaseModel):
    """Whether alarm notifications leave the platform (`firesafe notify`)."""

    notifiers: int = Field(
        description="Notifier processes connected to the database (0: none runs)"
    )
    rules: int = Field(description="Notification rules: with none, no notifier is needed")
    overdue: int = Field(
        description=f"Pending notifications due over {NOTIFICATIONS_OVERDUE_S} s ago, never "
        "tried and held back by nothing, or claimed by a notifier that stopped renewing its "
        f"claim over {NOTIFICATIONS_OVERDUE_S} s ago and not taken back: no notifier is "
        "delivering (a frozen one stays connected and counted in `notifiers`)"
    )
    oldest_overdue_s: float | None = Field(description="How long the oldest one has waited")
    failing: int = Field(
        default=0,
        description="Pending notifications whose delivery failed at least once and is being "
        "retried: a target refuses them or cannot be reached (GET "
        "/api/v1/alarms/{id}/notifications shows each delivery's last error)",
    )


class Health(BaseModel):
    status: Literal["ok", "degraded"] = Field(
        description="ok: all fine; degraded: the database is unreachable, ingest is "
        "stale or absent, the broker is disconnected, the API's live alarm feed is down, "
        "a background job failed its last run or stalled (`failed_jobs`), or notifications "
        "are not being delivered (rules but no notifier, or overdue ones). "
        "Always HTTP 200: the API itself answers; the body says what is wrong"
    )
    problems: list[str] = Field(
        default_factory=list,
        description="Why `status` is degraded, one code per check that failed: database, "
        "ingest, broker, shards_unowned, shards_stalled, failed_jobs, notifications, "
        "unregistered_fires, unreadable_fires, alarm_stream, api_tasks (empty when ok)",
    )
    database: DatabaseHealth
    broker: BrokerHealth
    ingest: IngestHealth
    shards: ShardsHealth | None = Field(
        default=None, description="Who holds which shard (None: the database is down)"
    )
    alarm_stream: StreamHealth
    tasks: dict[str, TaskHealth] = Field(
        description="The API's supervised background tasks (restarted with backoff)"
    )
    notifications: NotificationsHealth | None = Field(
        default=None, description="Alarm notifications (None: the database is down)"
    )
    unregistered_fires: UnraisedFires | None = Field(
        default=None,
        description="Fire alarms from devices the platform does not know (`unknown_device`, "
        "`site_mismatch`): a panel frame with fire or manual alarms from an unregistered "
        "address (GB/T 26875.3 gateway), or a `fire_alarm` or `activated` event. Register "
        "the device. None: the database is down; any makes `status` degraded",
    )
    unreadable_fires: UnraisedFires | None = Field(
        default=None,
        description="Fire alarms from registered devices that were bad input: a "
        "`fire_alarm` or `activated` event rejected (a firmware slip: `ts` in seconds, no "
        "`seq`, `Activated`), or a panel frame whose alarms the gateway could not raise. "
        "Fix the device. None: the database is down; any makes `status` degraded",
    )
    failed_jobs: list[JobHealth] = Field(
        default_factory=list,
        description="Background jobs whose last run failed: TimescaleDB's compression, "
        "rollup refresh or retention; on plain PostgreSQL the rollup refresh, also when "
        "noted minutes have waited over 5 minutes (no ingest process refreshes them)",
    )


class AlarmCount(BaseModel):
    type: AlarmType
    verdict: Verdict
    count: int

    @computed_field(description="Label of `type`" + _LABEL_NOTE)  # type: ignore[prop-decorator]
    @property
    def type_label(self) -> str:
        return _label("alarm_type", self.type)

    @computed_field(description="Label of `verdict`" + _LABEL_NOTE)  # type: ignore[prop-decorator]
    @property
    def verdict_label(self) -> str:
        return _label("verdict", self.verdict)


class SiteSummary(BaseModel):
    site: str
    name: str | None
    devices: int
    offline_devices: int
    open_alarms: list[AlarmCount]
    suppressed_today: int = Field(description="Alarms judged false since 00:00 UTC")
    timezone: str = Field(
        default="UTC",
        description="The site's IANA time zone (times in the API stay UTC; dashboards and "
        "notifications show this zone's local time)",
    )
    standard: SiteStandard = Field(
        default="EN",
        description="Which standards' default thresholds the site's devices follow "
        "(EN, or GB: the Chinese national standards)",
    )
