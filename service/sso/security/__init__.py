"""Cryptography adapters behind the domain's ports.

- `passwords`: argon2id hashing in a bounded thread pool (`PasswordHasher`).
- `policy`: the password policy (lengths in code points, blocklist).
- `keys`: the signing-key set directory, rotation, the reloading `KeyRing`.
- `tokens`: access-token JWTs (`AccessTokenIssuer`), strict verification.
- `legacy`: the seed service's HS256 token for `auth.Auth` clients.
- `secretbox`: AES-256-GCM for secrets at rest (`SecretCipher`), the data key.
- `opaque`: refresh tokens, session ids, successor derivation, HKDF.
- `keytool`: the `sso keys ...` command line.

Nothing here imports grpc, a database or Redis driver (import-linter contracts).
"""
