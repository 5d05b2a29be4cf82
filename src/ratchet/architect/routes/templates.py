"""The template library the Architect renders from."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, Field

from ratchet.architect.deps import architect
from ratchet.architect.service import Architect
from ratchet.core import templates
from ratchet.rest import ERROR_RESPONSES

router = APIRouter(prefix="/templates", tags=["templates"], responses=ERROR_RESPONSES)


class Question(BaseModel):
    name: str
    type: str
    help: str
    default: Any = None
    choices: list[Any] | None = None


class TemplateInfo(BaseModel):
    name: str
    family: str = Field(description="runner, strategy, scaffold, ...")
    summary: str
    plugin: str = Field(description="the plugin that registered its library")
    version: str
    questions: list[Question]


class TemplateDetail(TemplateInfo):
    readme: str = Field(description="the template's README (its docs page)")


def _info(t: templates.Template) -> dict[str, Any]:
    return {k: v for k, v in t.to_dict().items() if k != "path"}


@router.get("", response_model=list[TemplateInfo])
def list_templates(arch: Architect = Depends(architect)) -> list[dict[str, Any]]:
    """Every template of the installed libraries, by name."""
    return [_info(t) for t in sorted(arch.library.values(), key=lambda t: t.name)]


@router.get("/{name}", response_model=TemplateDetail)
def show_template(name: str = Path(min_length=1), arch: Architect = Depends(architect)) -> dict[str, Any]:
    """One template: its questions and README."""
    t = templates.get(arch.library, name)
    return {**_info(t), "readme": t.readme}
