"""Benchmarks of the SSO service: `make bench` runs `python -m bench.run`.

Why this package exists: to measure Login, Refresh and ValidateToken against
real PostgreSQL and Redis, next to two ceilings measured in the same run on the
same machine (raw argon2 verifications, a bare gRPC echo server), so the
ratios mean something (`bench.run`), and to sweep every scenario to its
saturation point next to the same and more ceilings (`bench.suite`, the
load-test suite). See docs/performance.md.
"""
