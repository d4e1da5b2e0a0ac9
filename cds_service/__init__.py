"""CDS Hooks 2.0 service that flags orders a payer medical policy considers investigational."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask

from cds_service.audit import AuditTrail
from cds_service.config import Settings
from cds_service.context import FhirFetcher
from cds_service.cors import init_cors
from cds_service.engine import Engine
from cds_service.errors import register_error_handlers
from cds_service.jsonio import OrjsonProvider
from cds_service.logs import configure_logging

__all__ = ["Settings", "create_app"]

ENGINE_KEY = "cds_engine"
SETTINGS_KEY = "cds_settings"
STORE_KEY = "cds_store"
AUDIT_KEY = "cds_audit"
FETCHER_KEY = "cds_fhir_fetcher"


def create_app(test_config: Settings | Mapping[str, Any] | None = None) -> Flask:
    """Application factory: ``flask --app cds_service run``, tests and gunicorn all use it.

    Policies and card templates are loaded and checked here, so a broken file fails start-up
    (raising :class:`cds_service.policy.PolicyError`) rather than a request.
    """
    settings = test_config if isinstance(test_config, Settings) else Settings.from_env(**dict(test_config or {}))
    configure_logging(settings.log_level)

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json = OrjsonProvider(app)
    app.extensions[SETTINGS_KEY] = settings
    app.extensions[ENGINE_KEY] = Engine.from_settings(settings)
    # Configuration only: each fetch builds its own session and threads.
    app.extensions[FETCHER_KEY] = FhirFetcher(settings.fhir_budget_ms, settings.fhir_open_server)
    # The database is checked (and the embedded one migrated) here: raises StorageError.
    audit = AuditTrail.open(settings)
    app.extensions[AUDIT_KEY] = audit
    app.extensions[STORE_KEY] = audit.store

    # Imported here, not at the top: they import prometheus_client, which must not load before
    # `cds-service serve` has set PROMETHEUS_MULTIPROC_DIR (see cds_service.server).
    from cds_service import api, evidence, ops, telemetry  # noqa: PLC0415
    from cds_service.security import init_security  # noqa: PLC0415
    from cds_service.storage.replay import SqlReplayCache  # noqa: PLC0415

    telemetry.init_app(app)  # first, so the request id and timer exist for every other hook
    init_cors(app, settings.cors_origins)
    init_security(app, settings, SqlReplayCache(audit.store))
    ops.init_app(app)
    app.register_blueprint(api.bp)
    app.register_blueprint(evidence.bp)
    register_error_handlers(app)
    return app
