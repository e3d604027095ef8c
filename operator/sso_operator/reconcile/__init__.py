"""Reconciliation of an SSOInstance: apply its children, observe them, write status.

Why this package exists: the kopf handlers stay thin and the steps stay
testable. ``children`` applies every child through :mod:`sso_operator.kube`
(server-side apply, so re-running is harmless) and gates the Deployment on its
migration Job; ``readiness`` reads the children back and turns what it sees
into conditions, the phase and the rest of ``status``.
"""
