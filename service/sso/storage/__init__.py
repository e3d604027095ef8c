"""Storage adapters: the only package that talks to the database and Redis drivers.

- `tables`: the schema (SQLAlchemy Core), shared by repositories and Alembic.
- `db`: engines (PostgreSQL via asyncpg, SQLite via aiosqlite), `Database`, `ping`.
- `errors`: the one translator of driver errors into `sso.errors`.
- `users`, `apps`, `sessions` (+ `rotation`): the repository ports of `sso.domain.ports`.
- `redis`, `denylist`: the Redis client and the revocation denylist (Redis or in memory).
- `migrate`: run the Alembic migrations from code.
"""
