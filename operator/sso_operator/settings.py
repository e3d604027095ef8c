"""Operator-wide settings: kopf's knobs and the environment that sets them.

Why this module exists: kopf's defaults suit a demo (a ``kopf.zalando.org``
finalizer, 60 s backoffs, no watch timeouts); a production operator needs its
own finalizer and annotation prefix (``sso.dev``), bounded timeouts, and a way
for the Helm chart (and the tests) to tune these without code changes. Every
knob is an ``SSO_OPERATOR_*`` environment variable, parsed once into a typed
:class:`OperatorConfig`; the kopf startup handler applies it to kopf's settings.

Variables (all optional):

=================================  ==========================================
``SSO_OPERATOR_NAMESPACES``        comma-separated namespaces to watch; all when empty
``SSO_OPERATOR_LIVENESS``          liveness endpoint URL, ``off`` to disable
``SSO_OPERATOR_PEERING``           kopf peering object name; standalone when empty
``SSO_OPERATOR_BACKOFF``           seconds before retrying an unexpected error (10)
``SSO_OPERATOR_WATCH_TIMEOUT``     server-side watch timeout in seconds (300)
``SSO_OPERATOR_REQUEST_TIMEOUT``   timeout of one API request in seconds (60)
``SSO_OPERATOR_LOG_LEVEL``         debug, info or warning (info)
``SSO_OPERATOR_LOG_FORMAT``        plain, full or json (json)
``SSO_OPERATOR_INSTANCE``          reporting instance on Events (the pod name via HOSTNAME)
``SSO_OPERATOR_RESYNC``            seconds between resyncs of each SSOInstance (status, drift) (15)
``SSO_OPERATOR_ENDPOINT_OVERRIDES`` ``ns/instance=host:port,...``: gRPC address of an
                                   instance, instead of the in-cluster Service (tests, dev)
``SSO_OPERATOR_ADMIN_ENDPOINT_OVERRIDES`` the same for its admin port (sso.v1.Admin);
                                   unset for an instance = its ENDPOINT_OVERRIDES entry
``SSO_OPERATOR_CLIENTAPP_RESYNC``  seconds between drift checks of a ClientApp (60)
``SSO_OPERATOR_ADMIN_TIMEOUT``     deadline of one Admin API call in seconds (10)
=================================  ==========================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import kopf

from sso_operator import kube

PREFIX = "sso.dev"
FINALIZER = f"{PREFIX}/finalizer"
ENV_PREFIX = "SSO_OPERATOR_"
DEFAULT_LIVENESS = "http://0.0.0.0:8081/healthz"
REPORTING_COMPONENT = "sso-operator"

LogLevel = Literal["debug", "info", "warning"]
LogFormat = Literal["plain", "full", "json"]


class ConfigError(ValueError):
    """Raised when an ``SSO_OPERATOR_*`` variable has a value the operator cannot use."""


@dataclass(frozen=True)
class OperatorConfig:
    """The operator's configuration, as read from the environment."""

    namespaces: tuple[str, ...] = ()
    liveness: str | None = DEFAULT_LIVENESS
    peering: str | None = None
    backoff: float = 10.0
    watch_timeout: float = 300.0
    request_timeout: float = 60.0
    log_level: LogLevel = "info"
    log_format: LogFormat = "json"
    instance: str = REPORTING_COMPONENT
    #: Seconds between resyncs of each SSOInstance (its kopf timer).
    resync: float = 15.0
    #: ``(("namespace/instance", "host:port"), ...)``: see :meth:`grpc_endpoint`.
    endpoint_overrides: tuple[tuple[str, str], ...] = ()
    #: The same for the admin port: see :meth:`admin_endpoint`.
    admin_endpoint_overrides: tuple[tuple[str, str], ...] = ()
    clientapp_resync: float = 60.0
    admin_timeout: float = 10.0

    def grpc_endpoint(self, name: str, namespace: str, default: str) -> str:
        """The address of an SSOInstance's gRPC API: an override, else ``default``.

        Pods do not run in a local control plane (kwok only pretends), so tests and
        development map an instance to a service process on the host.
        """
        return dict(self.endpoint_overrides).get(f"{namespace}/{name}", default)

    def admin_endpoint(self, name: str, namespace: str, default: str) -> str:
        """The address of an SSOInstance's sso.v1.Admin: an override, else ``default``."""
        return dict(self.admin_endpoint_overrides).get(f"{namespace}/{name}", default)

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces

    @property
    def standalone(self) -> bool:
        return self.peering is None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorConfig:
        """Read ``SSO_OPERATOR_*`` variables; raise :class:`ConfigError` on a bad value."""
        source = os.environ if env is None else env

        def get(name: str) -> str:
            return source.get(ENV_PREFIX + name, "").strip()

        liveness = get("LIVENESS")
        return cls(
            namespaces=tuple(ns.strip() for ns in get("NAMESPACES").split(",") if ns.strip()),
            liveness=None if liveness == "off" else (liveness or DEFAULT_LIVENESS),
            peering=get("PEERING") or None,
            backoff=_seconds(get("BACKOFF"), "BACKOFF", cls.backoff),
            watch_timeout=_seconds(get("WATCH_TIMEOUT"), "WATCH_TIMEOUT", cls.watch_timeout),
            request_timeout=_seconds(
                get("REQUEST_TIMEOUT"), "REQUEST_TIMEOUT", cls.request_timeout
            ),
            log_level=_choice(get("LOG_LEVEL"), "LOG_LEVEL", ("debug", "info", "warning"), "info"),
            log_format=_choice(get("LOG_FORMAT"), "LOG_FORMAT", ("plain", "full", "json"), "json"),
            instance=get("INSTANCE") or source.get("HOSTNAME", "") or REPORTING_COMPONENT,
            resync=_seconds(get("RESYNC"), "RESYNC", cls.resync),
            endpoint_overrides=_overrides(get("ENDPOINT_OVERRIDES"), "ENDPOINT_OVERRIDES"),
            admin_endpoint_overrides=_overrides(
                get("ADMIN_ENDPOINT_OVERRIDES"), "ADMIN_ENDPOINT_OVERRIDES"
            ),
            clientapp_resync=_seconds(
                get("CLIENTAPP_RESYNC"), "CLIENTAPP_RESYNC", cls.clientapp_resync
            ),
            admin_timeout=_seconds(get("ADMIN_TIMEOUT"), "ADMIN_TIMEOUT", cls.admin_timeout),
        )


def _overrides(raw: str, variable: str) -> tuple[tuple[str, str], ...]:
    """Parse ``ns/instance=host:port,...`` (see :meth:`OperatorConfig.grpc_endpoint`)."""
    pairs: list[tuple[str, str]] = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        key, sep, address = (text.strip() for text in item.partition("="))
        namespace, slash, name = key.partition("/")
        host, colon, port = address.rpartition(":")
        if not (sep and slash and namespace and name and colon and host and port.isdigit()):
            raise ConfigError(
                f"{ENV_PREFIX}{variable}: {item!r} is not namespace/instance=host:port"
            )
        pairs.append((key, address))
    return tuple(pairs)


def _seconds(raw: str, name: str, default: float) -> float:
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{ENV_PREFIX}{name}={raw!r} is not a number of seconds") from None
    if value <= 0:
        raise ConfigError(f"{ENV_PREFIX}{name}={raw!r} must be positive")
    return value


def _choice(raw: str, name: str, allowed: tuple[Any, ...], default: Any) -> Any:
    if not raw:
        return default
    if raw.lower() not in allowed:
        raise ConfigError(f"{ENV_PREFIX}{name}={raw!r} must be one of {', '.join(allowed)}")
    return raw.lower()


def apply(settings: kopf.OperatorSettings, config: OperatorConfig) -> None:
    """Apply the configuration to kopf's settings (in place)."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.SmartProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration"
    )
    settings.posting.enabled = True
    settings.posting.reporting_component = REPORTING_COMPONENT
    settings.posting.reporting_instance = config.instance
    settings.posting.event_name_prefix = f"{REPORTING_COMPONENT}-"
    if config.peering is None:
        settings.peering.standalone = True
    else:
        settings.peering.standalone = False
        settings.peering.name = config.peering
        settings.peering.mandatory = True
    settings.execution.default_backoff = config.backoff
    # The apiserver parses timeoutSeconds as an integer ("10.0" is a 400 Bad Request).
    server_timeout = max(1, round(config.watch_timeout))
    settings.watching.server_timeout = server_timeout
    settings.watching.client_timeout = server_timeout + 30
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = config.request_timeout
    settings.networking.connect_timeout = 10


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, logger: kopf.Logger, **_: Any) -> None:
    """kopf startup: apply the environment's configuration before any resource is handled."""
    config = OperatorConfig.from_env()
    apply(settings, config)
    mode = "standalone" if config.standalone else f"peering {config.peering}"
    logger.info(f"sso-operator configured: finalizer {FINALIZER}, {mode}")


@kopf.on.login()
def login(settings: kopf.OperatorSettings, logger: kopf.Logger, **_: Any) -> kopf.ConnectionInfo:
    """kopf login: see :func:`sso_operator.kube.connection`; the operator's own requests
    (:func:`sso_operator.kube.request`) use the same credentials."""
    info = kube.connection(settings, logger)
    kube.remember_login(settings, info)
    return info
