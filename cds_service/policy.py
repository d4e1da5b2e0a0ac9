"""The policy file schema and its loader.

A policy is data: one YAML file per policy under ``policies/``, written and reviewed by a policy
analyst. This module validates those files with pydantic at start-up so that a broken file stops
the service with a message naming the file and the field, instead of failing at the first order.
Nothing here knows about HTTP.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from cds_service.yamlpos import YamlDocument, error_line, parse_yaml

NonEmpty = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong in a policy or card file, written ``file:line: field: message`` like a compiler's
    diagnostics, so an editor or CI log viewer can jump to it."""

    path: Path
    line: int | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else str(self.path)
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class PolicyError(Exception):
    """A policy or card file that cannot be used; the message names the file, the line and the field."""

    def __init__(self, message: str | None = None, problems: Sequence[Problem] = ()) -> None:
        self.problems = tuple(problems)
        super().__init__(message or "; ".join(str(p) for p in self.problems))


class Strict(BaseModel):
    """Unknown keys are typos in a hand-written file: reject them rather than ignore them."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class CodeSystem(StrEnum):
    """Code systems a policy may list; their URIs and aliases live in :mod:`cds_service.terminology`."""

    CPT = "cpt"
    ICD10PCS = "icd10pcs"
    HCPCS = "hcpcs"


class Position(StrEnum):
    INVESTIGATIONAL = "investigational"


class CodeRule(Strict):
    system: CodeSystem
    code: NonEmpty
    display: NonEmpty
    # True for codes that do not name the technique by themselves (CPT 93799 "unlisted
    # cardiovascular procedure"): they count only when the order's text names it.
    requires_text: bool = False
    condition: str | None = None
    range: str | None = None

    @model_validator(mode="after")
    def _condition_explains_requires_text(self) -> CodeRule:
        if self.requires_text and not self.condition:
            raise ValueError("a code with requires_text needs a `condition` saying when it counts")
        return self


class TextRules(Strict):
    # Multi-word names and brand names, matched case-insensitively on word boundaries.
    phrases: list[NonEmpty] = Field(min_length=1)
    # Short upper-case tokens (IRE, PFA) that mean other things elsewhere (paraformaldehyde,
    # iron-responsive element): matched case-sensitively and only with a context word nearby.
    acronyms: list[NonEmpty] = Field(default_factory=list)
    acronym_context: list[NonEmpty] = Field(default_factory=list)

    @model_validator(mode="after")
    def _acronyms_need_context(self) -> TextRules:
        if self.acronyms and not self.acronym_context:
            raise ValueError("acronyms need at least one acronym_context word")
        return self


class RelatedPolicy(Strict):
    id: NonEmpty
    title: NonEmpty


class DesignCategory(StrEnum):
    RCT = "rct"
    PROSPECTIVE_COMPARATIVE = "prospective-comparative"
    PROSPECTIVE_SINGLE_ARM = "prospective-single-arm"
    RETROSPECTIVE_COMPARATIVE = "retrospective-comparative"
    CASE_SERIES = "case-series"


class IndicationGroup(StrEnum):
    LIVER = "liver"
    PANCREAS = "pancreas"
    PROSTATE = "prostate"
    LUNG = "lung"
    KIDNEY = "kidney"
    CARDIAC = "cardiac"
    MIXED = "mixed"


class Study(Strict):
    author: NonEmpty
    year: int
    design: NonEmpty
    design_category: DesignCategory
    subjects: int = Field(gt=0)
    ire_subjects: int = Field(gt=0)
    indication: NonEmpty
    indication_group: IndicationGroup
    finding: NonEmpty
    limitation: NonEmpty
    reference: int | None = None
    # What the IRE group was compared with; null when there was no comparison group. Shown with
    # each randomized trial, since "randomized" alone would overstate a trial of IRE against IRE.
    comparator: NonEmpty | None = None


class MetaAnalysis(Strict):
    author: NonEmpty
    year: int
    studies: int = Field(gt=0)
    subjects: int | None = None
    indication: NonEmpty
    finding: NonEmpty
    reference: int | None = None


class Guideline(Strict):
    body: NonEmpty
    guideline: NonEmpty
    version: NonEmpty
    statement: NonEmpty


class FdaEvent(Strict):
    date: NonEmpty
    event: NonEmpty


class Reference(Strict):
    id: NonEmpty
    citation: NonEmpty


class Evidence(Strict):
    strength: NonEmpty
    studies: list[Study] = Field(min_length=1)
    meta_analyses: list[MetaAnalysis] = Field(default_factory=list)
    guidelines: list[Guideline] = Field(default_factory=list)
    fda: list[FdaEvent] = Field(default_factory=list)
    references: list[Reference] = Field(default_factory=list)


class HistoryEntry(Strict):
    date: dt.date
    status: str | None = None
    action: NonEmpty


class PlanType(StrEnum):
    COMMERCIAL_HMO = "commercial-hmo"
    COMMERCIAL_PPO = "commercial-ppo"
    MEDICARE = "medicare"
    MEDICAID = "medicaid"


class PlanNote(Strict):
    id: NonEmpty
    plans: list[PlanType] = Field(min_length=1)
    states: list[Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]] = Field(min_length=1)
    text: NonEmpty


class Policy(Strict):
    id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9.\-]*$")]
    version: NonEmpty
    title: NonEmpty
    status: NonEmpty
    publish_date: dt.date
    last_review_date: dt.date
    position: Position
    position_statement: NonEmpty
    scope: NonEmpty
    card: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9\-]*$")]
    policy_url: str | None = None
    related_policies: list[RelatedPolicy] = Field(default_factory=list)
    codes: list[CodeRule] = Field(min_length=1)
    diagnoses: str | None = None
    text: TextRules
    evidence: Evidence
    history: list[HistoryEntry] = Field(default_factory=list)
    plan_notes: list[PlanNote] = Field(default_factory=list)

    @model_validator(mode="after")
    def _codes_unique(self) -> Policy:
        seen: set[tuple[str, str]] = set()
        for rule in self.codes:
            key = (rule.system, rule.code.upper())
            if key in seen:
                raise ValueError(f"code {rule.system} {rule.code} is listed twice")
            seen.add(key)
        return self


def describe_validation_error(error: ValidationError) -> str:
    """``field.path: message; ...`` for every problem pydantic found."""
    parts = []
    for item in error.errors(include_url=False):
        where = ".".join(str(p) for p in item["loc"]) or "(top level)"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def validation_problems(path: Path, error: ValidationError, document: YamlDocument) -> list[Problem]:
    """Every problem pydantic found, each with the line it sits on in ``document``."""
    return [
        Problem(
            path,
            document.line_of(item["loc"]),
            ".".join(str(p) for p in item["loc"]) or None,
            str(item["msg"]).removeprefix("Value error, "),
        )
        for item in error.errors(include_url=False)
    ]


def read_yaml_file(path: Path, what: str) -> YamlDocument:
    """A YAML file whose top level must be a mapping of ``what`` fields."""
    try:
        document = parse_yaml(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(problems=[Problem(path, None, None, f"cannot read: {exc}")]) from exc
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc)
        raise PolicyError(problems=[Problem(path, error_line(exc), None, f"not valid YAML: {problem}")]) from exc
    if not isinstance(document.data, dict):
        raise PolicyError(problems=[Problem(path, 1, None, f"expected a mapping of {what} fields at the top level")])
    return document


def load_policy_file(path: Path) -> Policy:
    document = read_yaml_file(path, "policy")
    try:
        policy = Policy.model_validate(document.data)
    except ValidationError as exc:
        raise PolicyError(problems=validation_problems(path, exc, document)) from exc
    if path.stem != policy.id:
        message = f"'{policy.id}' must match the file name ('{path.stem}.yaml')"
        raise PolicyError(problems=[Problem(path, document.line_of(("id",)), "id", message)])
    return policy


def load_policies(directory: Path) -> tuple[Policy, ...]:
    """Every ``*.yaml`` policy in ``directory``, sorted by id; at least one must exist."""
    if not directory.is_dir():
        raise PolicyError(f"{directory}: policy directory does not exist")
    policies = tuple(load_policy_file(path) for path in sorted(directory.glob("*.yaml")))
    if not policies:
        raise PolicyError(f"{directory}: no policy files (*.yaml) found")
    return policies


def policies_by_id(policies: Iterable[Policy]) -> dict[str, Policy]:
    return {policy.id: policy for policy in policies}


def describe_policies(policies: Iterable[Policy]) -> str:
    """``SURG.00126 2024-04-01, ...``: what is loaded, for logs and readiness."""
    return ", ".join(f"{policy.id} {policy.version}" for policy in policies)
