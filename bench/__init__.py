"""Benchmarks of the SSO service: `make bench` runs `python -m bench.run`.

Why this package exists: to measure Login, Refresh and ValidateToken against
real PostgreSQL and Redis, next to two ceilings measured in the same run on the
same machine (raw argon2 verifications, a bare gRPC echo server), so the
ratios mean something. See docs/performance.md.
"""
