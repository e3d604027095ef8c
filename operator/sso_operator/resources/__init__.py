"""Pure builders: an SSOInstance's typed spec in, Kubernetes manifests out.

Why this package exists: what the operator creates must be reviewable and
testable without a cluster. Every function here is pure (no API calls, no
clock, no randomness except where a caller passes it in), and
``tests/unit/test_operator_resources.py`` compares their output with golden
files. One module per concern: ``common`` (labels, owner references, security
contexts), ``secrets``, ``config``, ``service``, ``database``, ``redis``,
``migration``, ``network``.
"""
