"""Entry point of the ``sso-operator`` console script and ``python -m sso_operator``.

Why this module exists: the container runs one command with no arguments and
is configured by ``SSO_OPERATOR_*`` variables (see :mod:`sso_operator.settings`),
while people running it locally want the familiar flags. :func:`main` reads
both (flags win), configures logging, imports the handlers and hands over to
``kopf.run`` with the namespace scope, the standalone/peering mode and the
liveness endpoint that Kubernetes probes.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
from collections.abc import Sequence

import kopf

from sso_operator.settings import ConfigError, OperatorConfig

HANDLERS_MODULE = "sso_operator.handlers"


def parse_args(argv: Sequence[str], base: OperatorConfig) -> OperatorConfig:
    """Overlay command-line flags on the configuration read from the environment."""
    parser = argparse.ArgumentParser(
        prog="sso-operator",
        description="Reconcile SSOInstance and ClientApp resources (sso.dev/v1alpha1).",
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        dest="namespaces",
        help="watch this namespace (repeatable); default: $SSO_OPERATOR_NAMESPACES or all",
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace")
    parser.add_argument("--liveness", help="liveness endpoint URL, or 'off' (default: %(default)s)")
    parser.add_argument("--peering", help="kopf peering name (default: standalone)")
    parser.add_argument("--log-level", choices=["debug", "info", "warning"])
    parser.add_argument("--log-format", choices=["plain", "full", "json"])
    args = parser.parse_args(list(argv))
    config = base
    if args.namespaces:
        config = dataclasses.replace(config, namespaces=tuple(args.namespaces))
    if args.all_namespaces:
        config = dataclasses.replace(config, namespaces=())
    if args.liveness:
        liveness = None if args.liveness == "off" else args.liveness
        config = dataclasses.replace(config, liveness=liveness)
    if args.peering:
        config = dataclasses.replace(config, peering=args.peering)
    if args.log_level:
        config = dataclasses.replace(config, log_level=args.log_level)
    if args.log_format:
        config = dataclasses.replace(config, log_format=args.log_format)
    return config


def main(argv: Sequence[str] | None = None) -> int:
    """Run the operator until it is stopped; returns the process exit code."""
    try:
        config = parse_args(sys.argv[1:] if argv is None else argv, OperatorConfig.from_env())
    except ConfigError as error:
        print(f"sso-operator: {error}", file=sys.stderr)
        return 2
    kopf.configure(
        debug=config.log_level == "debug",
        verbose=False,  # kopf's "verbose" means DEBUG for its own loggers
        quiet=config.log_level == "warning",
        log_format=kopf.LogFormat[config.log_format.upper()],
    )
    importlib.import_module(HANDLERS_MODULE)
    kopf.run(
        standalone=config.standalone,
        peering_name=config.peering,
        clusterwide=config.clusterwide,
        namespaces=list(config.namespaces),
        liveness_endpoint=config.liveness,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
