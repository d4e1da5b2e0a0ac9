"""The evidence summary each card links to: server-rendered HTML and the same content as JSON."""

from __future__ import annotations

from collections import Counter
from typing import Any

from flask import Blueprint, Response, jsonify, render_template

from cds_service.errors import NotFound
from cds_service.policy import DesignCategory, Policy
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
        "html": f"{base}/evidence/{policy.id}",
        "json": f"{base}/evidence/{policy.id}.json",
    }
    return data


def _chart(policy: Policy) -> dict[str, Any]:
    """Bar geometry for the server-rendered SVG: one bar per study, sized by IRE subjects."""
    studies = sorted(policy.evidence.studies, key=lambda s: (s.indication_group, -s.ire_subjects))
    widest = max(s.ire_subjects for s in studies)
    rows = []
    for index, study in enumerate(studies):
        rows.append(
            {
                "y": 28 + index * 26,
                "width": max(2, round(380 * study.ire_subjects / widest)),
                "label": f"{study.author} {study.year}",
                "group": study.indication_group.value,
                "design": study.design_category.value,
                "design_label": DESIGN_LABELS[study.design_category],
                "n": study.ire_subjects,
            }
        )
    return {"rows": rows, "height": 28 + len(rows) * 26 + 40, "legend": DESIGN_LABELS}


def _with_headers(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response


@bp.get("/<policy_id>.json")
def evidence_json(policy_id: str) -> Response:
    return jsonify(evidence_document(_policy(policy_id), base_url()))


@bp.get("/<policy_id>")
def evidence_page(policy_id: str) -> Response:
    policy = _policy(policy_id)
    html = render_template(
        "evidence.html",
        doc=evidence_document(policy, base_url()),
        chart=_chart(policy),
        design_labels={k.value: v for k, v in DESIGN_LABELS.items()},
    )
    return _with_headers(Response(html, mimetype="text/html"))
