"""The SSO service: a stateless gRPC authentication service (package `sso`)."""

__version__ = "0.1.0"
