"""Code-system URIs and the aliases real clients send for them.

Sources (see ../shared/reference/ire-codes-and-terms.md, section 1): HL7 Terminology (THO) naming
systems for CPT, HCPCS and ICD-10-PCS; US Core's VSAC-to-FHIR URI map; older US Core releases that
used the ``urn:oid:`` form. Look-ups compare a normalised key (trimmed, lower case, no trailing
slash, ``https`` folded to ``http``) so that harmless spelling differences still match.
"""

from __future__ import annotations

from cds_service.policy import CodeSystem

CANONICAL_URI: dict[CodeSystem, str] = {
    CodeSystem.CPT: "http://www.ama-assn.org/go/cpt",
    CodeSystem.ICD10PCS: "http://www.cms.gov/Medicare/Coding/ICD10",
    CodeSystem.HCPCS: "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
}

DISPLAY_NAME: dict[CodeSystem, str] = {
    CodeSystem.CPT: "CPT",
    CodeSystem.ICD10PCS: "ICD-10-PCS",
    CodeSystem.HCPCS: "HCPCS",
}

_ALIASES: dict[CodeSystem, tuple[str, ...]] = {
    CodeSystem.CPT: (
        "http://www.ama-assn.org/go/cpt",
        "urn:oid:2.16.840.1.113883.6.12",
    ),
    CodeSystem.ICD10PCS: (
        "http://www.cms.gov/Medicare/Coding/ICD10",
        "urn:oid:2.16.840.1.113883.6.4",
        "http://terminology.hl7.org/CodeSystem/icd10PCS",
        "http://www.icd10data.com/icd10pcs",
    ),
    CodeSystem.HCPCS: (
        "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
        "urn:oid:2.16.840.1.113883.6.285",
        # Retired "HCFA Procedure Codes" identifiers still seen in older feeds.
        "urn:oid:2.16.840.1.113883.6.14",
        "http://terminology.hl7.org/CodeSystem/HCPCS-all-codes",
    ),
}


def system_key(uri: str) -> str:
    key = uri.strip().lower().rstrip("/")
    if key.startswith("https://"):
        key = "http://" + key[len("https://") :]
    return key


SYSTEM_BY_KEY: dict[str, CodeSystem] = {
    system_key(alias): system for system, aliases in _ALIASES.items() for alias in aliases
}


def code_system_for(uri: object) -> CodeSystem | None:
    """The code system a ``Coding.system`` value names, or None if it is not one we know."""
    if not isinstance(uri, str):
        return None
    return SYSTEM_BY_KEY.get(system_key(uri))


def normalise_code(code: object) -> str | None:
    """Codes compare trimmed and upper-cased: '0600t ' and '0600T' are the same CPT code."""
    if not isinstance(code, str):
        return None
    code = code.strip().upper()
    return code or None
