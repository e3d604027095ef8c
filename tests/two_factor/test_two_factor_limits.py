"""Concurrency, guessing caps, backup codes and what the database holds (G2, G3, G5, C5).

Real concurrency: 50 simultaneous gRPC calls through `asyncio.gather` against the
service on SQLite and PostgreSQL; the outcomes are counted, not timed.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
from typing import Any

import grpc
import pytest
from sqlalchemy import select
from sso_harness import Running
from tf_helpers import PASSWORD, Client, expect, reason_of

from sso.security import totp
from sso.storage.tables import audit_events, backup_codes, mfa_challenges, totp_credentials
from sso_proto.sso.v1 import account_pb2

S = grpc.StatusCode
N = 50


def new_client(running: Running) -> Client:
    return Client(running, f"tf-{secrets.token_hex(4)}@example.com")


async def outcomes(calls: list[Any]) -> tuple[int, list[tuple[grpc.StatusCode, str]]]:
    results = await asyncio.gather(*calls, return_exceptions=True)
    failures = []
    for result in results:
        if isinstance(result, grpc.aio.AioRpcError):
            failures.append((result.code(), reason_of(result)))
        elif isinstance(result, BaseException):
            raise result
    return len(results) - len(failures), failures


async def test_one_code_submitted_50_times_at_once_succeeds_once(tf_server_db: Running) -> None:
    c = await new_client(tf_server_db).enrolled()
    challenges = [await c.challenge() for _ in range(N)]
    code = c.code()
    ok, failures = await outcomes([c.verify_call(ch, totp=code) for ch in challenges])
    print(f"\n{N} concurrent VerifyMfa with one TOTP code: {ok} success(es), {failures[:1]}…")
    assert ok == 1
    assert set(failures) == {(S.UNAUTHENTICATED, "MFA_CODE_INVALID")}


async def test_one_backup_code_used_50_times_at_once_succeeds_once(tf_server_db: Running) -> None:
    c = await new_client(tf_server_db).enrolled()
    challenges = [await c.challenge() for _ in range(N)]
    code = c.backup_codes[0]
    ok, failures = await outcomes([c.verify_call(ch, backup=code) for ch in challenges])
    assert ok == 1
    assert set(failures) == {(S.UNAUTHENTICATED, "MFA_CODE_INVALID")}
    status = await c.account.GetTwoFactorStatus(
        account_pb2.GetTwoFactorStatusRequest(), metadata=c.bearer()
    )
    assert status.backup_codes_remaining == 9


async def test_regeneration_voids_the_old_set(tf_server_db: Running) -> None:
    c = await new_client(tf_server_db).enrolled()
    old = list(c.backup_codes)
    without = account_pb2.RegenerateBackupCodesRequest(password=PASSWORD)
    await expect(
        c.account.RegenerateBackupCodes(without, metadata=c.bearer()),
        S.PERMISSION_DENIED,
        "REAUTHENTICATION_REQUIRED",
    )
    request = account_pb2.RegenerateBackupCodesRequest(password=PASSWORD, totp_code=c.code())
    new = list((await c.account.RegenerateBackupCodes(request, metadata=c.bearer())).backup_codes)
    assert len(new) == 10 and not set(new) & set(old)
    # Every old code fails (5 per challenge: the per-challenge cap).
    for start in range(0, 10, 5):
        challenge = await c.challenge()
        for code in old[start : start + 5]:
            await expect(
                c.verify_call(challenge, backup=code), S.UNAUTHENTICATED, "MFA_CODE_INVALID"
            )
    await c.verify_call(await c.challenge(), backup=new[0])


async def test_account_cap_runs_no_hmac_after_100_wrong_codes(
    tf_server_db: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """C5: 100 wrong codes (20 challenges x 5), then even the right code is refused and
    no HMAC is computed. The spy wraps `sso.security.totp.hotp` and only counts calls;
    the real function still runs."""
    c = await new_client(tf_server_db).enrolled()
    calls = 0
    real = totp.hotp

    def spy(secret: bytes, counter: int, digits: int = 6) -> str:
        nonlocal calls
        calls += 1
        return real(secret, counter, digits)

    monkeypatch.setattr(totp, "hotp", spy)
    right = c.code()
    wrong = [f"{(int(right) + i) % 1_000_000:06d}" for i in range(1, 101)]
    for start in range(0, 100, 5):
        challenge = await c.challenge()
        for code in wrong[start : start + 5]:
            await expect(c.verify_call(challenge, totp=code), S.UNAUTHENTICATED, "MFA_CODE_INVALID")
    assert calls >= 100 * 3  # the first 100 were checked (3 steps each, more for replays)

    calls = 0
    challenge = await c.challenge()
    await expect(c.verify_call(challenge, totp=wrong[0]), S.UNAUTHENTICATED, "MFA_LOCKED")
    await expect(c.verify_call(challenge, totp=right), S.UNAUTHENTICATED, "MFA_LOCKED")
    assert calls == 0
    # A backup code (120 bits: nothing to guess) still works and clears the count.
    await c.verify_call(challenge, backup=c.backup_codes[0])
    assert calls == 0
    await c.verify_call(await c.challenge(), totp=right)
    assert calls > 0


async def test_database_never_holds_the_secret_or_the_codes(tf_server_db: Running) -> None:
    c = await new_client(tf_server_db).enrolled()
    challenge_id = await c.challenge()
    raw_secret = base64.b32decode(c.secret)
    engine = tf_server_db.container.bundle.auth.users._engine  # type: ignore[attr-defined]
    async with engine.connect() as conn:
        rows = []
        for table in (totp_credentials, backup_codes, mfa_challenges):
            rows += [tuple(r) for r in (await conn.execute(select(table))).all()]
        hashes = (await conn.execute(select(backup_codes.c.code_hash))).scalars().all()
        audit = (await conn.execute(select(audit_events))).all()
    dump = repr(rows) + repr(audit)
    needles = [c.secret, c.secret.lower(), raw_secret.hex(), challenge_id]
    needles += c.backup_codes + [code.replace("-", "") for code in c.backup_codes]
    assert rows and not [n for n in needles if n in dump]
    assert all(bytes(raw_secret) not in bytes(v) for r in rows for v in r if isinstance(v, bytes))
    assert len(hashes) == 10 and all(len(h) == 32 for h in hashes)
    sealed = [r for r in rows if r and isinstance(r[1], str) and r[1].startswith("v1.")]
    assert sealed, "the TOTP secret is stored as a v1 AES-GCM box"


async def test_every_event_writes_an_audit_row(tf_server_db: Running) -> None:
    c = await new_client(tf_server_db).enrolled()
    challenge = await c.challenge()
    await expect(
        c.verify_call(challenge, totp="000000" if c.code() != "000000" else "000001"),
        S.UNAUTHENTICATED,
    )
    await c.verify_call(challenge, totp=c.code())
    await expect(c.verify_call(await c.challenge(), totp=c.code()), S.UNAUTHENTICATED)  # replay
    c.tick()
    regen = account_pb2.RegenerateBackupCodesRequest(password=PASSWORD, totp_code=c.code())
    await c.account.RegenerateBackupCodes(regen, metadata=c.bearer())
    await expect(c.legacy_login(), S.FAILED_PRECONDITION)
    c.tick()
    disable = account_pb2.DisableTotpRequest(password=PASSWORD, totp_code=c.code())
    await c.account.DisableTotp(disable, metadata=c.bearer())
    engine = tf_server_db.container.bundle.auth.users._engine  # type: ignore[attr-defined]
    async with engine.connect() as conn:
        events = set(
            (
                await conn.execute(
                    select(audit_events.c.event).where(audit_events.c.event.like("authn_mfa%"))
                )
            ).scalars()
        )
    assert events >= {
        "authn_mfa_enroll_started",
        "authn_mfa_enabled",
        "authn_mfa_challenge_issued",
        "authn_mfa_fail",
        "authn_mfa_success",
        "authn_mfa_replay",
        "authn_mfa_backup_codes_regenerated",
        "authn_mfa_disabled",
    }


async def test_export_section_has_the_status_only(tf_server_db: Running) -> None:
    c = await new_client(tf_server_db).enrolled()
    await c.verify_call(await c.challenge(), backup=c.backup_codes[0])
    user = await tf_server_db.container.auth.users.get_by_email(c.email)
    assert user is not None
    exporter = tf_server_db.container.bundle.lifecycle.exporter  # type: ignore[union-attr]
    section = (await exporter.export(user.id))["two_factor"]
    assert section["totp_enabled"] is True and section["backup_codes_remaining"] == 9
    assert section["enrolled_at"]
    text = repr(section)
    assert c.secret not in text and not any(code in text for code in c.backup_codes)


async def test_cleanup_deletes_used_and_expired_challenges(tf_server_db: Running) -> None:
    c = await new_client(tf_server_db).enrolled()
    used = await c.challenge()
    await c.challenge()  # live (a new challenge also drops the user's spent ones: made first)
    await c.verify_call(used, totp=c.code())
    repo = tf_server_db.container.bundle.two_factor.repo  # type: ignore[union-attr]
    assert await repo.cleanup(c.now()) == 1  # the used one
    c.tick(11)
    assert await repo.cleanup(c.now()) == 1  # the expired one
    assert await repo.cleanup(c.now()) == 0
