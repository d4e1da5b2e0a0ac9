"""FHIR R4 validation of the ServiceRequests a card is about, done once per distinct resource.

The service is lenient on clinical content: a ServiceRequest that is not valid FHIR R4 is still
examined, and the problem is only logged (hookInstance, field paths and error types, never
values). Which orders are validated is :class:`FhirValidation` (``CDS_FHIR_VALIDATION``): by
default the orders that fall under a policy, since the matcher reads raw JSON and needs no valid
FHIR, and the other orders of a call are never mentioned in a card.

Validating a realistic ServiceRequest with fhir.resources costs about 130 µs (some 16 nested
pydantic models, each running fhir_core's Python-level validators). EHRs send the same draft
orders again and again: order-select fires on every selection with all drafts so far, and
order-sign repeats them. So the verdict is kept per resource content, in a bounded LRU per
process, and a resource seen before costs a fingerprint and a look-up (about 4 µs) instead of a
validation. Every validated resource is checked and every problem logged on every call that
carries it.

The fingerprint is a 128-bit BLAKE2b digest of ``marshal.dumps`` of the decoded JSON. marshal is
a fast, faithful serialisation of JSON values (dict, list, str, int, float, bool, None): equal
bytes mean equal content, so a hit is never wrong; equal content may serialise differently (key
order, shared objects), which only costs a miss. The cache holds digests and problem summaries,
never resource content, so it keeps no patient data and its size is bounded by its entry count.
"""

from __future__ import annotations

import logging
import marshal
import threading
from collections import OrderedDict
from dataclasses import dataclass
from enum import StrEnum
from hashlib import blake2b
from typing import Any, Final

from fhir.resources.R4B.servicerequest import ServiceRequest
from pydantic import ValidationError

log = logging.getLogger(__name__)

DEFAULT_CACHE_SIZE: Final = 8192


class FhirValidation(StrEnum):
    """Which examined ServiceRequests are validated with fhir.resources.

    ``matched``: those that fall under a policy, the orders a card is about. Validating every draft
    order of an order-sign call was nearly all the cost of a call with orders the service had not
    seen before (about 130 µs each; 19 ms for 100 orders, bench/RESULTS.md), spent on orders no
    card mentions. ``all``: every examined order, for checking an EHR's ServiceRequests during
    integration.
    """

    MATCHED = "matched"
    ALL = "all"


_LOGGED_PROBLEMS = 5


@dataclass(frozen=True, slots=True)
class FhirProblems:
    """Why a resource is not valid FHIR R4: how many problems, and the first few as field paths."""

    count: int
    summary: str


def fhir_problems(resource: dict[str, Any]) -> FhirProblems | None:
    """Validate with fhir.resources, every time; None when the resource is valid."""
    try:
        ServiceRequest.model_validate(resource)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)[:_LOGGED_PROBLEMS]
        summary = ", ".join(f"{'.'.join(map(str, e['loc']))} ({e['type']})" for e in errors)
        return FhirProblems(exc.error_count(), summary)
    return None


_MISSING: Final = object()


class FhirChecker:
    """Validates examined resources and logs their problems; remembers verdicts by content.

    Shared by every request of a process. The only mutable state is the verdict cache, guarded by
    a lock so that threaded servers may share it too.
    """

    def __init__(self, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        self._size = cache_size
        self._verdicts: OrderedDict[bytes, FhirProblems | None] = OrderedDict()
        self._lock = threading.Lock()

    def problems(self, resource: dict[str, Any]) -> FhirProblems | None:
        """The resource's FHIR problems (None when valid), from the cache when seen before."""
        if self._size == 0:
            return fhir_problems(resource)
        try:
            key = blake2b(marshal.dumps(resource), digest_size=16).digest()
        except ValueError:  # nested beyond marshal's depth limit: validate without caching
            return fhir_problems(resource)
        with self._lock:
            verdict = self._verdicts.get(key, _MISSING)
            if verdict is not _MISSING:
                self._verdicts.move_to_end(key)
                return verdict  # type: ignore[return-value]  # narrowed by the sentinel
        verdict = fhir_problems(resource)
        with self._lock:
            self._verdicts[key] = verdict
            if len(self._verdicts) > self._size:
                self._verdicts.popitem(last=False)
        return verdict

    def check(self, resource: dict[str, Any], hook_instance: str) -> None:
        """Log (never raise) when ``resource`` is not valid FHIR R4; matching goes on regardless."""
        problems = self.problems(resource)
        if problems is not None:
            log.warning(
                "hookInstance=%s: %s/%s is not valid FHIR R4 (%d problem(s)): %s; examined anyway",
                hook_instance,
                resource.get("resourceType"),
                resource.get("id", "?"),
                problems.count,
                problems.summary,
            )
