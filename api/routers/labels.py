"""/api/v1/labels: the human labels of every machine code, in one language.

Clients (dashboards, apps, notification templates) show `label` text and keep
the codes for logic; the codes never change with the language.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from api.deps import CallerDep
from api.errors import ERROR_RESPONSES, BadParameter, request_lang
from api.jsonbody import JsonRoute
from firesafe import i18n

router = APIRouter(
    prefix="/api/v1/labels", tags=["labels"], responses=ERROR_RESPONSES, route_class=JsonRoute
)


class LabelCatalogue(BaseModel):
    lang: str = Field(description="The language of the labels (BCP 47)", examples=["zh-CN"])
    languages: list[str] = Field(description="Every language the platform speaks")
    labels: dict[str, dict[str, str]] = Field(
        description="vocabulary (alarm_type, verdict, status, reason, kind, reading, event, "
        "reject_reason, role, connectivity, standard) -> code -> label",
    )


@router.get(
    "",
    response_model=LabelCatalogue,
    summary="Labels of alarm types, verdicts, statuses, reasons, kinds ... in one language",
)
async def get_labels(
    _caller: CallerDep,
    lang: Annotated[
        str | None,
        Query(
            description="en or zh-CN (zh, zh-Hans, zh_CN also accepted); "
            "default: from Accept-Language, else en",
            max_length=35,
        ),
    ] = None,
) -> LabelCatalogue:
    if lang is None:
        chosen = request_lang.get()
    else:
        normalized = i18n.normalize(lang)
        if normalized is None:
            raise BadParameter(
                "lang", f"unsupported language {lang!r} (use one of {', '.join(i18n.LANGUAGES)})"
            )
        chosen = normalized
    return LabelCatalogue(lang=chosen, languages=list(i18n.LANGUAGES), labels=i18n.labels(chosen))
