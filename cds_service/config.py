"""Service configuration: one typed place, filled from defaults, environment and the command line.

Every setting has an embedded default so a fresh machine runs the service with nothing else.
Environment variables use the ``CDS_`` prefix (``CDS_BASE_URL``, ``CDS_PAYER_NAME``, ...).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, StringConstraints, field_validator

from cds_service.fhircheck import DEFAULT_CACHE_SIZE, FhirValidation

_PACKAGE = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """``policies`` or ``cards``: the copy inside an installed wheel, else the checkout's folder."""
    packaged = _PACKAGE / "_data" / name
    return packaged if packaged.is_dir() else _PACKAGE.parent / name


class SystemActionPlacement(StrEnum):
    """Where CRD coverage-information ``systemActions`` go in a hook response.

    CDS Hooks 2.0 ("CDS Service Response") puts ``systemActions`` at the top level; the reference
    sandbox reads them only from ``extension.systemActions`` (checklist section 9).
    """

    TOP_LEVEL = "top-level"
    EXTENSION = "extension"
    BOTH = "both"


def default_data_dir() -> Path:
    """Where the embedded database, the audit spool and the generated id-hash key live.

    The XDG data directory of the user running the service, so a reinstall of the virtualenv or a
    fresh checkout keeps the audit trail.
    """
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "share") / "cds-service"


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    policies_dir: Path = Field(default_factory=lambda: data_dir("policies"))
    cards_dir: Path = Field(default_factory=lambda: data_dir("cards"))
    # Absolute base for card links and the evidence page (e.g. https://cds.example.org). Without
    # it, links are built from the Host of each request.
    base_url: str | None = None
    # The health plan's name as clinicians know it; CRD resp-4 wants it as the card's source label.
    payer_name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)] = "Health plan"
    # Browser clients (the CDS Hooks sandbox) need CORS; "*" admits any origin.
    cors_origins: tuple[str, ...] = ("*",)
    max_body_bytes: int = Field(default=5 * 1024 * 1024, gt=0)
    # Which examined orders are FHIR-validated (problems are logged, never refused).
    fhir_validation: FhirValidation = FhirValidation.MATCHED
    # FHIR validation verdicts remembered per worker, by resource content (0: validate every time).
    fhir_cache_size: int = Field(default=DEFAULT_CACHE_SIZE, ge=0)
    log_level: str = "INFO"
    # JSON nesting deeper than this is refused with a 400 (FHIR resources nest well under 30).
    max_json_depth: int = Field(default=64, ge=8)

    # Client authentication (CDS Hooks 2.0 "Trusting CDS Clients"). Without a trusted-clients
    # file the service runs open, for local development and sandboxes only.
    trusted_clients: Path | None = None
    # Longest exp - iat accepted. The spec sets none; clients mint 5-minute tokens in practice.
    jwt_max_lifetime_s: float = Field(default=300.0, gt=0)
    # Clock skew allowed on iat (and exp).
    jwt_leeway_s: float = Field(default=30.0, ge=0, le=300)
    jwks_timeout_s: float = Field(default=2.0, gt=0, le=10)
    # Floor between two fetches of one JWKS URL when unknown kids arrive.
    jwks_min_refetch_s: float = Field(default=30.0, ge=0)
    # Reverse proxies in front of the service whose X-Forwarded-Proto/Host/Port/Prefix headers are
    # trusted when computing the URL a JWT's aud must equal. 0: trust none.
    trusted_proxies: int = Field(default=0, ge=0, le=5)

    # Total wall-clock budget for reading patient and coverage from the client's FHIR server when
    # prefetch lacks them (CDS Hooks 2.0 asks services to answer in about 500 ms).
    fhir_budget_ms: int = Field(default=500, gt=0, le=5000)
    # Query a fhirServer that came without fhirAuthorization (the reference sandbox sends an open
    # server). Off by default: the URL is the caller's to choose, and an unauthenticated fetch
    # from it is a server-side request on the caller's behalf.
    fhir_open_server: bool = False
    # Answer as a Da Vinci CRD server: add coverage-information systemActions for matching orders.
    crd_coverage_info: bool = False
    crd_system_actions: SystemActionPlacement = SystemActionPlacement.TOP_LEVEL

    # Storage (cds_service.storage). Without a URL the embedded SQLite file in data_dir is used.
    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: SecretStr | None = None
    # Apply pending migrations at start-up to a configured database (the embedded one always is).
    upgrade_db: bool = False
    # Key for the HMAC-SHA256 of patient and user ids; without it a random key is generated once
    # in data_dir/id-hash.key. Instances sharing one database must share the key.
    id_hash_key: SecretStr | None = Field(default=None, min_length=16)
    # Show an order-select card again at order-sign for the same unchanged order.
    repeat_on_sign: bool = False

    @field_validator("base_url")
    @classmethod
    def _absolute_base(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError("base_url must be an absolute http(s) URL")
        return value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        return value

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then ``CDS_*`` variables, then explicit overrides (command-line options)."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            env_value = environ.get(f"CDS_{name.upper()}")
            if env_value is not None and env_value != "":
                values[name] = env_value
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(values)
