"""The evidence summary each card links to: server-rendered HTML and the same content as JSON."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, jsonify, render_template

from cds_service.cards import evidence_link
from cds_service.errors import NotFound
from cds_service.policy import DesignCategory, IndicationGroup, Policy, Study
from cds_service.terminology import CANONICAL_URI, DISPLAY_NAME
from cds_service.web import base_url, engine

bp = Blueprint("evidence", __name__, url_prefix="/evidence")

DESIGN_LABELS = {
    DesignCategory.RCT: "Randomized trial",
    DesignCategory.PROSPECTIVE_COMPARATIVE: "Prospective, comparative",
    DesignCategory.PROSPECTIVE_SINGLE_ARM: "Prospective, single arm",
    DesignCategory.RETROSPECTIVE_COMPARATIVE: "Retrospective, comparative",
    DesignCategory.CASE_SERIES: "Case series",
}

INDICATION_LABELS = {
    IndicationGroup.LIVER: "Liver",
    IndicationGroup.PANCREAS: "Pancreas",
    IndicationGroup.PROSTATE: "Prostate",
    IndicationGroup.LUNG: "Lung",
    IndicationGroup.KIDNEY: "Kidney",
    IndicationGroup.CARDIAC: "Heart",
    IndicationGroup.MIXED: "Several organs",
}

# Content-Security-Policy for a page with no script and one inline stylesheet.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _policy(policy_id: str) -> Policy:
    for policy in engine().policies:
        if policy.id == policy_id:
            return policy
    raise NotFound(f"no policy with id '{policy_id}'")


def evidence_document(policy: Policy, base: str) -> dict[str, Any]:
    """The evidence summary as data: the page renders exactly this."""
    data = policy.model_dump(mode="json", exclude={"card"})
    for code, rule in zip(data["codes"], policy.codes, strict=True):
        code["system_name"] = DISPLAY_NAME[rule.system]
        code["system_uri"] = CANONICAL_URI[rule.system]
    studies = policy.evidence.studies
    data["evidence"]["totals"] = {
        "studies": len(studies),
        "subjects_treated_with_ire": sum(s.ire_subjects for s in studies),
        "largest_study_ire_subjects": max(s.ire_subjects for s in studies),
        "randomized_trials": sum(s.design_category is DesignCategory.RCT for s in studies),
        "by_design": {DESIGN_LABELS[k]: v for k, v in Counter(s.design_category for s in studies).items()},
    }
    data["urls"] = {
        "html": evidence_link(policy, base),
        "json": f"{evidence_link(policy, base)}.json",
    }
    return data


@dataclass(frozen=True, slots=True)
class StudyGroup:
    """The studies of one indication, largest first: one block of the chart and of the table."""

    indication: IndicationGroup
    label: str
    studies: tuple[Study, ...]

    @property
    def patients(self) -> int:
        return sum(study.ire_subjects for study in self.studies)


def study_groups(policy: Policy) -> list[StudyGroup]:
    """Studies grouped by indication (in the enum's order), each group sorted by IRE patients."""
    ranked = sorted(policy.evidence.studies, key=lambda s: (-s.ire_subjects, s.author))
    return [
        StudyGroup(group, INDICATION_LABELS[group], tuple(s for s in ranked if s.indication_group is group))
        for group in IndicationGroup
        if any(s.indication_group is group for s in ranked)
    ]


# Chart geometry, in pixels: a heading line per indication, then per study a label line over its
# bar. Horizontal positions are percentages of the chart's width, so the chart fills a phone or a
# desktop column without scaling its text.
CHART_HEADING = 34
CHART_ROW = 44
BAR_HEIGHT = 16
BAR_SPAN = 80  # per cent of the width the largest bar takes; the rest holds its count


def _chart(groups: list[StudyGroup]) -> dict[str, Any]:
    """Geometry for the server-rendered SVG: each study's IRE patients, by indication and design."""
    widest = max(study.ire_subjects for group in groups for study in group.studies)
    y = 0
    blocks = []
    for group in groups:
        heading_y = y + 22
        y += CHART_HEADING
        bars = []
        for study in group.studies:
            bars.append(
                {
                    "label_y": y + 14,
                    "bar_y": y + 20,
                    "percent": round(max(0.5, BAR_SPAN * study.ire_subjects / widest), 1),
                    "label": f"{study.author} {study.year}",
                    "design": study.design_category.value,
                    "design_label": DESIGN_LABELS[study.design_category],
                    "n": study.ire_subjects,
                }
            )
            y += CHART_ROW
        blocks.append({"group": group, "y": heading_y, "bars": bars})
    return {"blocks": blocks, "height": y + 4, "bar_height": BAR_HEIGHT}


def _with_headers(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response


@bp.get("/<policy_id>.json")
def evidence_json(policy_id: str) -> Response:
    return jsonify(evidence_document(_policy(policy_id), base_url()))


@bp.get("/<policy_id>")
def evidence_page(policy_id: str) -> Response:
    policy = _policy(policy_id)
    groups = study_groups(policy)
    html = render_template(
        "evidence.html",
        doc=evidence_document(policy, base_url()),
        groups=groups,
        chart=_chart(groups),
        design_labels={k.value: v for k, v in DESIGN_LABELS.items()},
    )
    return _with_headers(Response(html, mimetype="text/html"))
