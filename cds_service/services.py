"""The CDS Services this server offers, declared once.

Discovery (``GET /cds-services``) is generated from these definitions and the hook endpoint
dispatches on them, so what is advertised and what runs cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from cds_service.hookrequest import Hook


class OrderScope(StrEnum):
    """Which draft orders a service evaluates."""

    # order-select: "Decision support should focus on the 'selected' orders" (order-select 1.0).
    SELECTIONS = "selections"
    # order-sign: every draftOrders entry is in scope, including re-signed, non-draft ones
    # (order-sign 1.1.0), so status is not filtered.
    ALL_DRAFT_ORDERS = "all-draft-orders"


@dataclass(frozen=True, slots=True)
class ServiceDefinition:
    id: str
    hook: Hook
    title: str
    description: str
    scope: OrderScope
    prefetch: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    usage_requirements: str | None = None

    def discovery(self) -> dict[str, object]:
        """The discovery entry (CDS Hooks 2.0 "Response"): optional fields only when valued."""
        entry: dict[str, object] = {
            "hook": self.hook.value,
            "title": self.title,
            "description": self.description,
            "id": self.id,
        }
        if self.prefetch:
            entry["prefetch"] = dict(self.prefetch)
        if self.usage_requirements:
            entry["usageRequirements"] = self.usage_requirements
        return entry


_USAGE = (
    "Send draft FHIR R4 ServiceRequest resources in context.draftOrders. Orders are recognised by "
    "CPT, ICD-10-PCS and order text. The patient and their active coverage (prefetch, or fhirServer "
    "with fhirAuthorization) are optional: they enable plan-specific guidance and coverage "
    "information; the warning comes without them."
)

# What the service reads besides the orders (CDS Hooks 2.0 "Prefetch Template"). The context
# module fetches exactly these queries when the client leaves a key out, so the advertised
# templates and the queries run cannot drift apart. Keys name cds_service.context.ContextKey.
PREFETCH: Mapping[str, str] = MappingProxyType(
    {
        "patient": "Patient/{{context.patientId}}",
        "coverage": "Coverage?patient={{context.patientId}}&status=active",
    }
)

SERVICES: tuple[ServiceDefinition, ...] = (
    ServiceDefinition(
        id="medical-policy-order-select",
        hook=Hook.ORDER_SELECT,
        title="Payer medical policy check (order selection)",
        description=(
            "Warns when a selected order is a procedure the health plan's medical policy considers "
            "investigational and not medically necessary, such as irreversible electroporation "
            "(SURG.00126), with the policy, the evidence and a suggestion to remove the order."
        ),
        scope=OrderScope.SELECTIONS,
        prefetch=PREFETCH,
        usage_requirements=_USAGE,
    ),
    ServiceDefinition(
        id="medical-policy-order-sign",
        hook=Hook.ORDER_SIGN,
        title="Payer medical policy check (order signing)",
        description=(
            "Before orders are signed, warns about every draft order the health plan's medical "
            "policy considers investigational and not medically necessary, such as irreversible "
            "electroporation (SURG.00126)."
        ),
        scope=OrderScope.ALL_DRAFT_ORDERS,
        prefetch=PREFETCH,
        usage_requirements=_USAGE,
    ),
)

SERVICES_BY_ID: Mapping[str, ServiceDefinition] = MappingProxyType({s.id: s for s in SERVICES})
# One service per hook, so tools that hold a request can find the service that answers it.
SERVICES_BY_HOOK: Mapping[Hook, ServiceDefinition] = MappingProxyType({s.hook: s for s in SERVICES})
