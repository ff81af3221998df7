"""/api/v1/notifications: targets and rules (admin; managers for their own sites),
and GET /api/v1/alarms/{id}/notifications, the audit of an alarm's deliveries."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Response
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from api.auth import Caller
from api.deps import CallerDep, ConnDep
from api.errors import ERROR_RESPONSES, BadBody, ErrorResponse, Forbidden
from api.jsonbody import JsonRoute
from api.params import ID_REGEX, NAME_REGEX
from api.schemas import AlarmType, Id, Page, Text, Timestamp
from notify import destinations, render
from storage.queries import Conn
from storage.queries import alarms as alarm_q
from storage.queries import notifications as notify_q

router = APIRouter(tags=["notifications"], responses=ERROR_RESPONSES, route_class=JsonRoute)

# A day: a rule that escalates less often than daily is a reminder, not an escalation.
MAX_ESCALATE_AFTER_S = 86_400
MAX_TEMPLATE_CHARS = 8_000
EMAIL_RE = r"^[^@\s<>\"',;]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252}[A-Za-z0-9])?$"
URL_RE = r"^https?://[^\s]{1,2000}$"
# A media type and its parameters in printable ASCII (CR LF let a header be
# injected; C1 controls or any non-ASCII character failed every delivery).
CONTENT_TYPE_RE = r"^[a-z]+/[A-Za-z0-9.+-]+(; *[\x21-\x7e][\x20-\x7e]*)?$"

# Suppressed is not a verdict to be told of on its own (see RuleIn.verdicts).
NotifiedVerdict = Literal["pending", "confirmed"]
TargetId = Annotated[str, Path(pattern=ID_REGEX, description="Target id")]
RuleId = Annotated[str, Path(pattern=ID_REGEX, description="Rule id")]
AlarmId = Annotated[str, Path(pattern=NAME_REGEX, description="Alarm id")]


def _language(value: object) -> object:
    """zh-CN, zh-Hans (the API's and the CLI's spelling) as zh; en-US as en."""
    if isinstance(value, str):
        tag = value.strip().lower().replace("_", "-")
        if tag in ("zh-cn", "zh-hans", "zh-hans-cn"):
            return "zh"
        if tag.startswith("en-"):
            return "en"
    return value


class TargetIn(BaseModel):
    """Where notifications go: a webhook (`url`) or an e-mail address (`address`)."""

    model_config = ConfigDict(extra="forbid")
    id: Id
    kind: Literal["webhook", "email"]
    url: Annotated[str, StringConstraints(pattern=URL_RE)] | None = Field(
        default=None, description="webhook: http(s) URL that receives the POST"
    )
    address: Annotated[str, StringConstraints(pattern=EMAIL_RE)] | None = Field(
        default=None, description="email: the recipient"
    )
    secret: Annotated[Text, StringConstraints(min_length=1, max_length=256)] | None = Field(
        default=None,
        description="webhook: HMAC-SHA256 key of X-Firesafe-Signature. Never returned; "
        "left out on an update, the stored one is kept.",
    )
    language: Annotated[Literal["en", "zh"], BeforeValidator(_language)] = Field(
        default="en",
        description="language of texts: en or zh (zh-CN and zh-Hans, as Accept-Language "
        "and --lang take them, are zh)",
    )
    template: Annotated[Text, StringConstraints(min_length=1, max_length=MAX_TEMPLATE_CHARS)] | (
        None
    ) = Field(
        default=None,
        description="webhook: a body template for SMS/voice gateways instead of the JSON "
        "document. Placeholders: {event} {text} {subject} {delivery} {language} "
        "{escalation} {alarm.<field>} (e.g. {alarm.site}); escaped for the content type.",
    )
    content_type: Annotated[str, StringConstraints(pattern=CONTENT_TYPE_RE)] | None = Field(
        default=None, description="Content-Type of a templated body (default JSON)"
    )

    @model_validator(mode="after")
    def _consistent(self) -> TargetIn:
        if self.kind == "webhook":
            if self.url is None or self.address is not None:
                raise ValueError("a webhook target needs url (and no address)")
            if problem := destinations.url_problem(self.url):
                raise ValueError(problem)
        elif self.address is None or self.url is not None:
            raise ValueError("an email target needs address (and no url)")
        if self.kind == "email" and (self.template or self.secret or self.content_type):
            raise ValueError("template, content_type and secret are for webhooks")
        if self.content_type and not self.template:
            raise ValueError("content_type is only for a template")
        if self.template:
            try:
                render.check_template(self.template)
            except render.UnknownPlaceholder as exc:
                # (render's own text is English only: said here with a template)
                if exc.alarm_field:
                    raise ValueError(
                        f"template: no such alarm field {exc.placeholder} "
                        f"(known: {', '.join(render.ALARM_FIELDS)})"
                    ) from exc
                raise ValueError(
                    f"template: unknown placeholder {exc.placeholder} "
                    f"(known: {' '.join(render.PLACEHOLDERS)})"
                ) from exc
        return self


class TargetOut(BaseModel):
    id: str
    kind: str
    url: str | None
    address: str | None
    language: str
    template: str | None
    content_type: str | None
    has_secret: bool = Field(description="whether a secret is set (the secret is never shown)")
    owner_sites: list[str] | None = Field(description="null: an admin's target")
    created_by: str | None
    created_at: Timestamp


class RuleIn(BaseModel):
    """Which alarm transitions go to which targets, and whom to escalate to."""

    model_config = ConfigDict(extra="forbid")
    id: Id
    sites: list[Id] | None = Field(
        default=None, description="sites the rule covers; null: every site (admins only)"
    )
    types: Annotated[list[AlarmType], Field(min_length=1)]
    verdicts: Annotated[list[NotifiedVerdict], Field(min_length=1)] = Field(
        default_factory=lambda: list[NotifiedVerdict](["confirmed"]),
        description="verdicts that are notified (default confirmed; add pending for "
        "alarms under verification). A false alarm (suppressed) is announced as `cleared` "
        "to whoever was told of it while pending.",
    )
    targets: Annotated[list[Id], Field(min_length=1, max_length=100)]
    escalate_after_s: Annotated[int, Field(ge=1, le=MAX_ESCALATE_AFTER_S)] | None = Field(
        default=None,
        description="a confirmed alarm still not acknowledged this long after it was "
        "confirmed goes to escalate_to, and again at this interval until acknowledged",
    )
    escalate_to: Annotated[list[Id], Field(max_length=100)] = Field(default_factory=list)

    @model_validator(mode="after")
    def _escalation(self) -> RuleIn:
        if (self.escalate_after_s is None) != (not self.escalate_to):
            raise ValueError("escalate_after_s and escalate_to go together")
        if self.sites is not None and not self.sites:
            raise ValueError("sites: give at least one site, or leave it out for every site")
        return self


class RuleOut(BaseModel):
    id: str
    sites: list[str] | None
    types: list[str]
    verdicts: list[str]
    targets: list[str]
    escalate_after_s: int | None
    escalate_to: list[str]
    owner_sites: list[str] | None
    created_by: str | None
    created_at: Timestamp


class Attempt(BaseModel):
    attempt: int
    at: Timestamp
    status: int | None = Field(description="HTTP status, or 250 for an accepted e-mail")
    error: str | None
    duration_ms: float | None


class Delivery(BaseModel):
    """One notification of an alarm to one target, with every attempt."""

    id: str = Field(description="the delivery id (X-Firesafe-Delivery), the same on retries")
    target: str
    kind: str | None = Field(description="null when the target was deleted since")
    event: str
    escalation: int
    rule: str | None
    status: Literal["pending", "delivered", "failed", "cancelled"]
    attempts: int
    last_status: int | None
    last_error: str | None
    created_at: Timestamp
    first_attempt_at: Timestamp | None
    last_attempt_at: Timestamp | None
    next_attempt_at: Timestamp | None = Field(description="when pending: the next attempt")
    delivered_at: Timestamp | None
    attempt_log: list[Attempt]


def _may_configure(caller: Caller) -> None:
    caller.require("admin", "manager")


def _check_sites(caller: Caller, sites: list[str] | None) -> None:
    """Managers configure rules for their own sites only."""
    if caller.role != "manager":
        return
    if sites is None:
        raise Forbidden("a manager's rule must name its sites (every site is for admins)")
    outside = sorted(set(sites) - set(caller.sites))
    if outside:
        raise Forbidden(f"sites outside the token's sites: {', '.join(outside)}")


# --- targets --------------------------------------------------------------------


@router.post(
    "/api/v1/notifications/targets",
    response_model=TargetOut,
    status_code=201,
    responses={200: {"model": TargetOut, "description": "Replaced"}},
    summary="Create (201) or replace (200) a target, by id (admin, manager)",
)
async def put_target(
    body: TargetIn, conn: ConnDep, caller: CallerDep, response: Response
) -> TargetOut:
    _may_configure(caller)
    if caller.role == "manager" and body.url is not None:
        try:
            await destinations.require_public(body.url)
        except destinations.UnresolvableHost as exc:
            # (the resolver's own words stay out: English, and the machine's)
            if exc.temporary:
                raise BadBody(
                    f"body url: webhook host {exc.host} did not resolve: the name servers "
                    "did not answer (try again)"
                ) from exc
            raise BadBody(
                f"body url: webhook host {exc.host} does not resolve (no such host)"
            ) from exc
        except destinations.PrivateDestination as exc:
            raise BadBody(f"body url: {exc}") from exc
    row, created = await notify_q.put_target(
        conn,
        scope=caller.scope,
        target_id=body.id,
        kind=body.kind,
        url=body.url,
        address=body.address,
        secret=body.secret,
        language=body.language,
        template=body.template,
        content_type=body.content_type,
        created_by=caller.name,
    )
    response.status_code = 201 if created else 200
    return TargetOut.model_validate(row)


@router.get(
    "/api/v1/notifications/targets",
    response_model=Page[TargetOut],
    summary="Targets (admin: all; manager: its own), without secrets",
)
async def list_targets(conn: ConnDep, caller: CallerDep) -> Page[TargetOut]:
    _may_configure(caller)
    rows = await notify_q.list_targets(conn, scope=caller.scope)
    return Page[TargetOut](items=[TargetOut.model_validate(r) for r in rows], next_cursor=None)


@router.get(
    "/api/v1/notifications/targets/{target_id}",
    response_model=TargetOut,
    responses={404: {"model": ErrorResponse}},
    summary="A target, without its secret",
)
async def get_target(target_id: TargetId, conn: ConnDep, caller: CallerDep) -> TargetOut:
    _may_configure(caller)
    return TargetOut.model_validate(
        await notify_q.get_target(conn, scope=caller.scope, target_id=target_id)
    )


@router.delete(
    "/api/v1/notifications/targets/{target_id}",
    status_code=204,
    response_class=Response,
    responses={404: {"model": ErrorResponse}, 409: {"model": ErrorResponse}},
    summary="Delete a target (409 while a rule uses it); its delivery history stays",
)
async def delete_target(target_id: TargetId, conn: ConnDep, caller: CallerDep) -> Response:
    _may_configure(caller)
    await notify_q.delete_target(conn, scope=caller.scope, target_id=target_id)
    return Response(status_code=204)


# --- rules ----------------------------------------------------------------------


@router.post(
    "/api/v1/notifications/rules",
    response_model=RuleOut,
    status_code=201,
    responses={200: {"model": RuleOut, "description": "Replaced"}},
    summary="Create (201) or replace (200) a rule, by id (admin; manager for its sites)",
)
async def put_rule(body: RuleIn, conn: ConnDep, caller: CallerDep, response: Response) -> RuleOut:
    _may_configure(caller)
    _check_sites(caller, body.sites)
    row, created = await notify_q.put_rule(
        conn,
        scope=caller.scope,
        rule_id=body.id,
        sites=sorted(set(body.sites)) if body.sites is not None else None,
        types=sorted(set(body.types)),
        verdicts=sorted(set(body.verdicts)),
        targets=body.targets,
        escalate_after_s=body.escalate_after_s,
        escalate_to=body.escalate_to,
        created_by=caller.name,
    )
    response.status_code = 201 if created else 200
    return RuleOut.model_validate(row)


@router.get(
    "/api/v1/notifications/rules",
    response_model=Page[RuleOut],
    summary="Rules (admin: all; manager: its own)",
)
async def list_rules(conn: ConnDep, caller: CallerDep) -> Page[RuleOut]:
    _may_configure(caller)
    rows = await notify_q.list_rules(conn, scope=caller.scope)
    return Page[RuleOut](items=[RuleOut.model_validate(r) for r in rows], next_cursor=None)


@router.get(
    "/api/v1/notifications/rules/{rule_id}",
    response_model=RuleOut,
    responses={404: {"model": ErrorResponse}},
    summary="A rule",
)
async def get_rule(rule_id: RuleId, conn: ConnDep, caller: CallerDep) -> RuleOut:
    _may_configure(caller)
    return RuleOut.model_validate(
        await notify_q.get_rule(conn, scope=caller.scope, rule_id=rule_id)
    )


@router.delete(
    "/api/v1/notifications/rules/{rule_id}",
    status_code=204,
    response_class=Response,
    responses={404: {"model": ErrorResponse}},
    summary="Delete a rule: its escalations under way stop",
)
async def delete_rule(rule_id: RuleId, conn: ConnDep, caller: CallerDep) -> Response:
    _may_configure(caller)
    await notify_q.delete_rule(conn, scope=caller.scope, rule_id=rule_id)
    return Response(status_code=204)


# --- audit ----------------------------------------------------------------------


@router.get(
    "/api/v1/alarms/{alarm_id}/notifications",
    response_model=Page[Delivery],
    responses={404: {"model": ErrorResponse}},
    tags=["alarms"],
    summary="Every notification of an alarm: target, event, attempts, status (any role, "
    "within its sites)",
)
async def alarm_notifications(
    alarm_id: AlarmId, conn: ConnDep, caller: CallerDep
) -> Page[Delivery]:
    await alarm_q.get_alarm(conn, scope=caller.scope, alarm_id=alarm_id)
    rows = await notify_q.alarm_notifications(conn, alarm_id=alarm_id)
    items = []
    for r in rows:
        item: dict[str, Any] = dict(r)
        if item["status"] != "pending":
            item["next_attempt_at"] = None
        items.append(Delivery.model_validate(item))
    return Page[Delivery](items=items, next_cursor=None)


# --- /metrics -------------------------------------------------------------------


async def metric_families(conn: Conn) -> list[Metric]:
    """Deliveries, failures, latency and backlog, for api/routers/metrics.py."""
    figures = await notify_q.metric_families_source(conn)
    outcomes = CounterMetricFamily(
        "firesafe_notify_attempts",
        "Delivery attempts by target kind and outcome (delivered, attempt_failed, gave_up)",
        labels=["kind", "outcome"],
    )
    for row in figures["counts"]:
        outcomes.add_metric([row["kind"], row["outcome"]], float(row["count"]))
    stored = {float(row["le"]): row for row in figures["latency"]}
    buckets: list[tuple[str, float]] = []
    total_sum = 0.0
    for le in notify_q.LATENCY_BUCKETS_S:
        row = stored.get(le)
        buckets.append(
            ("+Inf" if le == float("inf") else repr(le), float(row["count"] if row else 0))
        )
        total_sum = max(total_sum, float(row["sum_s"]) if row else 0.0)
    latency = HistogramMetricFamily(
        "firesafe_notify_latency_seconds",
        "Alarm transition to delivery, per delivered notification",
        buckets=buckets,
        sum_value=total_sum,
    )
    backlog = figures["backlog"]
    undelivered = GaugeMetricFamily(
        "firesafe_notify_undelivered", "Notifications not yet delivered (pending)"
    )
    undelivered.add_metric([], float(backlog["n"]))
    oldest = GaugeMetricFamily(
        "firesafe_notify_oldest_undelivered_seconds", "Age of the oldest undelivered notification"
    )
    oldest.add_metric([], float(backlog["oldest_s"]))
    return [outcomes, latency, undelivered, oldest]
