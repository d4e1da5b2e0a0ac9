"""Small helpers the blueprints share: the app's settings and engine, and absolute URLs."""

from __future__ import annotations

from typing import cast

from flask import current_app, request

from cds_service import AUDIT_KEY, ENGINE_KEY, FETCHER_KEY, SETTINGS_KEY
from cds_service.audit import AuditTrail
from cds_service.config import Settings
from cds_service.context import FhirFetcher
from cds_service.engine import Engine


def settings() -> Settings:
    return cast(Settings, current_app.extensions[SETTINGS_KEY])


def engine() -> Engine:
    return cast(Engine, current_app.extensions[ENGINE_KEY])


def audit_trail() -> AuditTrail:
    return cast(AuditTrail, current_app.extensions[AUDIT_KEY])


def fhir_fetcher() -> FhirFetcher:
    return cast(FhirFetcher, current_app.extensions[FETCHER_KEY])


def base_url() -> str:
    """The configured public base URL, else the one this request was addressed to."""
    return settings().base_url or request.host_url.rstrip("/")
