"""sso-operator: reconciles SSOInstance and ClientApp custom resources (group ``sso.dev``).

Why this package exists: platform teams describe an SSO deployment in YAML and
this kopf operator turns it into running, observable, backed-up resources. It
never imports the service package ``sso``; its contract with the service is the
CRDs, the Secrets and ConfigMaps it writes, the service's environment variables
and the service's admin gRPC API.

Layout: ``handlers/`` (thin kopf registrations), ``spec`` (typed CR models),
``status`` and ``conditions`` (the status documents), ``names`` (derived names),
``settings`` (kopf configuration from ``SSO_OPERATOR_*``), ``kube`` (API calls
and their errors).
"""

__version__ = "0.1.0"
