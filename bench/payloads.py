"""Deterministic, realistic CDS Hooks requests for the benchmark.

Each payload is an order-sign or order-select call whose ``draftOrders`` hold full FHIR R4
``ServiceRequest`` resources of the kind an EHR sends from order entry (placer identifier,
category, code with text, subject, encounter, requester, performer, reasonCode, occurrence,
notes, patient instruction), not minimal stubs: the service's cost is dominated by what it reads
and validates, so stub orders would flatter it. The same seed gives byte-identical payloads.

``python -m bench.payloads DIR`` writes ``DIR/<name>.json`` for every payload.
"""

from __future__ import annotations

import json
import random
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SEED = 20261126
SIGN = "medical-policy-order-sign"
SELECT = "medical-policy-order-select"
CPT = "http://www.ama-assn.org/go/cpt"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
SNOMED = "http://snomed.info/sct"
PLACER = "urn:oid:1.2.840.114350.1.13.0.1.7.2.798268"


@dataclass(frozen=True, slots=True)
class Orderable:
    """One row of a small order catalogue: what is ordered, why, and what the clinician notes."""

    cpt: str
    display: str
    text: str
    category: tuple[str, str]
    reason: tuple[str, str, str]
    note: str


_IMAGING = ("363679005", "Imaging")
_LAB = ("108252007", "Laboratory procedure")
_PROCEDURE = ("387713003", "Surgical procedure")
_COUNSEL = ("409063005", "Counseling")

# Everyday orders around an oncology or cardiology encounter; none falls under the IRE policy.
CATALOGUE: tuple[Orderable, ...] = (
    Orderable(
        "74177",
        "CT abdomen and pelvis with contrast",
        "CT abdomen/pelvis with IV contrast",
        _IMAGING,
        ("C25.0", "Malignant neoplasm of head of pancreas", "Restaging after neoadjuvant chemotherapy"),
        "Creatinine 0.9 mg/dL last week; no contrast allergy on file.",
    ),
    Orderable(
        "71260",
        "CT thorax with contrast",
        "CT chest with contrast",
        _IMAGING,
        ("C78.00", "Secondary malignant neoplasm of unspecified lung", "Evaluate pulmonary nodules"),
        "Compare with prior study from outside hospital (disc on file).",
    ),
    Orderable(
        "74183",
        "MRI abdomen without and with contrast",
        "MRI liver protocol with gadoxetate",
        _IMAGING,
        ("C22.0", "Liver cell carcinoma", "Characterise segment 7 lesion"),
        "Patient reports mild claustrophobia; oral anxiolytic prescribed.",
    ),
    Orderable(
        "80053",
        "Comprehensive metabolic panel",
        "CMP",
        _LAB,
        ("Z51.11", "Encounter for antineoplastic chemotherapy", "Pre-chemotherapy labs"),
        "Draw with next infusion visit.",
    ),
    Orderable(
        "85025",
        "Complete blood count with automated differential",
        "CBC with differential",
        _LAB,
        ("D70.1", "Agranulocytosis secondary to cancer chemotherapy", "Monitor neutrophil count"),
        "Call oncology fellow if ANC below 1000.",
    ),
    Orderable(
        "86301",
        "Immunoassay for tumor antigen, quantitative; CA 19-9",
        "CA 19-9",
        _LAB,
        ("C25.0", "Malignant neoplasm of head of pancreas", "Tumour marker trend"),
        "Previous value 212 U/mL.",
    ),
    Orderable(
        "93000",
        "Electrocardiogram, routine ECG with at least 12 leads",
        "12-lead ECG",
        _PROCEDURE,
        ("I48.0", "Paroxysmal atrial fibrillation", "Baseline rhythm before procedure"),
        "Patient on apixaban 5 mg twice daily.",
    ),
    Orderable(
        "93306",
        "Echocardiography, transthoracic, complete, with Doppler",
        "TTE complete",
        _IMAGING,
        ("I50.22", "Chronic systolic (congestive) heart failure", "Assess ejection fraction"),
        "Last EF 40% in March.",
    ),
    Orderable(
        "47000",
        "Biopsy of liver, needle; percutaneous",
        "Percutaneous liver biopsy, ultrasound guided",
        _PROCEDURE,
        ("R16.0", "Hepatomegaly, not elsewhere classified", "Tissue diagnosis of liver lesion"),
        "Hold anticoagulation per peri-procedural protocol.",
    ),
    Orderable(
        "77263",
        "Radiation therapy planning, complex",
        "Radiation oncology treatment planning",
        _PROCEDURE,
        ("C61", "Malignant neoplasm of prostate", "Definitive radiotherapy planning"),
        "Fiducials placed last month.",
    ),
    Orderable(
        "99203",
        "Office or other outpatient visit for a new patient",
        "Referral to interventional radiology",
        _COUNSEL,
        ("C22.0", "Liver cell carcinoma", "Discuss locoregional treatment options"),
        "Tumour board recommended evaluation for ablation candidacy.",
    ),
    Orderable(
        "97802",
        "Medical nutrition therapy; initial assessment",
        "Dietitian consult",
        _COUNSEL,
        ("R63.4", "Abnormal weight loss", "Weight loss of 6 kg over 3 months"),
        "Pancreatic enzyme replacement started.",
    ),
)

IRE_ORDER = Orderable(
    "0600T",
    "Ablation, irreversible electroporation; 1 or more tumors per organ, including imaging guidance, percutaneous",
    "Percutaneous IRE (NanoKnife) of pancreatic head tumor",
    _PROCEDURE,
    ("C25.0", "Malignant neoplasm of head of pancreas", "Locally advanced pancreatic adenocarcinoma"),
    "Completed 4 cycles of FOLFIRINOX; stable disease. Anaesthesia consult requested.",
)


@dataclass(frozen=True, slots=True)
class Payload:
    """One benchmark request: which service it is posted to and the JSON body."""

    name: str
    service: str
    body: dict[str, Any]
    orders: int
    ire: bool

    @property
    def path(self) -> str:
        return f"/cds-services/{self.service}"

    def encoded(self) -> bytes:
        return json.dumps(self.body, separators=(",", ":")).encode()


class _Generator:
    """Builds the resources of one payload from a seeded random source (no global state)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.patient = f"pat-{self.rng.randrange(10_000, 99_999)}"
        self.encounter = f"enc-{self.rng.randrange(10_000, 99_999)}"
        self.requester = "PractitionerRole/onc-dr-lee"

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def service_request(self, index: int, item: Orderable) -> dict[str, Any]:
        day = 1 + self.rng.randrange(28)
        hour = 7 + self.rng.randrange(10)
        reason_code, reason_display, reason_text = item.reason
        return {
            "resourceType": "ServiceRequest",
            "id": f"sr-{index:03d}-{item.cpt.lower()}",
            "identifier": [
                {
                    "use": "official",
                    "type": {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                "code": "PLAC",
                                "display": "Placer Identifier",
                            }
                        ]
                    },
                    "system": PLACER,
                    "value": f"ORD-{self.rng.randrange(100_000, 999_999)}",
                }
            ],
            "status": "draft",
            "intent": "order",
            "category": [{"coding": [{"system": SNOMED, "code": item.category[0], "display": item.category[1]}]}],
            "priority": self.rng.choice(("routine", "routine", "urgent")),
            "code": {"coding": [{"system": CPT, "code": item.cpt, "display": item.display}], "text": item.text},
            "subject": {"reference": f"Patient/{self.patient}"},
            "encounter": {"reference": f"Encounter/{self.encounter}"},
            "occurrenceDateTime": f"2026-12-{day:02d}T{hour:02d}:30:00-05:00",
            "authoredOn": "2026-11-26T09:41:00-05:00",
            "requester": {"reference": self.requester, "display": "Dr. Jordan Lee"},
            "performer": [{"reference": "Organization/org-main-hospital", "display": "Main Hospital"}],
            "reasonCode": [
                {"coding": [{"system": ICD10CM, "code": reason_code, "display": reason_display}], "text": reason_text}
            ],
            "note": [
                {
                    "authorReference": {"reference": self.requester},
                    "time": "2026-11-26T09:40:00-05:00",
                    "text": item.note,
                }
            ],
            "patientInstruction": "Bring a list of current medications.",
        }

    def hook_request(self, hook: str, orders: list[dict[str, Any]], selections: list[str] | None) -> dict[str, Any]:
        context: dict[str, Any] = {
            "userId": self.requester,
            "patientId": self.patient,
            "encounterId": self.encounter,
        }
        if selections is not None:
            context["selections"] = selections
        context["draftOrders"] = {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"fullUrl": f"urn:uuid:{self.uuid()}", "resource": order} for order in orders],
        }
        return {
            "hook": hook,
            "hookInstance": self.uuid(),
            "fhirServer": "https://ehr.example.org/fhir",
            "context": context,
        }


def make_payload(orders: int, *, ire: bool, select: bool = False, seed: int = SEED) -> Payload:
    """``orders`` draft orders; with ``ire``, the middle one is the IRE order.

    For order-select the one selected order is the middle one (the IRE order when ``ire``).
    """
    gen = _Generator(seed + orders * 4 + ire * 2 + select)
    middle = orders // 2
    resources = [
        gen.service_request(i, IRE_ORDER if ire and i == middle else CATALOGUE[(i * 5 + 3) % len(CATALOGUE)])
        for i in range(orders)
    ]
    hook = "order-select" if select else "order-sign"
    selections = [f"ServiceRequest/{resources[middle]['id']}"] if select else None
    name = f"{'select' if select else 'sign'}-{orders}{'-ire' if ire else ''}"
    body = gen.hook_request(hook, resources, selections)
    return Payload(name, SELECT if select else SIGN, body, orders, ire)


def all_payloads() -> list[Payload]:
    """The benchmark set: order-sign with 1, 10 and 100 orders, with and without IRE, and one
    order-select call with 10 drafts and the IRE order selected."""
    payloads = [make_payload(n, ire=ire) for n in (1, 10, 100) for ire in (False, True)]
    payloads.append(make_payload(10, ire=True, select=True))
    return payloads


def write_payloads(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for payload in all_payloads():
        path = directory / f"{payload.name}.json"
        path.write_bytes(payload.encoded())
        paths.append(path)
    return paths


if __name__ == "__main__":
    for written in write_payloads(Path(sys.argv[1] if len(sys.argv) > 1 else "bench/out/payloads")):
        print(written)
