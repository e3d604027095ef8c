"""TOTP second factor and backup codes: enrolment, login challenges, re-authentication.

Why this module exists: it holds the rules of SECURITY_CHECKLIST G1-G6, C5 and
E5 in one place, through ports only (crypto in `sso.security.totp`, state in
`sso.storage.two_factor`), so they read the same on PostgreSQL and SQLite:

- enrolment is pending until a code from the new secret verifies (G4); the
  confirm activates exactly the secret that was verified (compare-and-swap);
- a login of an enrolled user ends in an MFA challenge, not tokens; the
  challenge is stored hashed, expires, allows `challenge_attempts` codes and is
  spent once (`verify`); the session is then opened by `AuthService.open_session`,
  the same code path as a password-only login;
- a TOTP code is accepted at most once: the step it matched is stored by
  compare-and-swap, so of N concurrent submissions exactly one wins (G2);
- guessing is capped per account *before* any HMAC runs (C5); a backup code
  (120 bits, nothing to guess) still works then and clears the count;
- enabling or disabling TOTP ends the user's other sessions (E5); disabling
  and regenerating backup codes need the password and a current code.

Every decision emits one `SecurityEvent` (audit table, log line, metric).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from sso.config import TwoFactorSettings
from sso.domain.auth import MAX_TOKEN_CHARS, AccessClaims, AuthService, ClientInfo, IssuedTokens
from sso.domain.events import Detail, SecurityEvent
from sso.domain.models import User
from sso.domain.ports import (
    MfaChallengeIssued,
    MfaChallengeRecord,
    SecondFactorCrypto,
    TotpState,
    TwoFactorRepository,
)
from sso.errors import (
    FailedPrecondition,
    InvalidArgument,
    MfaRequired,
    PermissionDenied,
    Unauthenticated,
)

# RFC 8176 values: "otp" (RFC 6238 code), "mfa" (more than one factor). A backup code is no
# registered method: "backup_code" is ours (docs/two-factor.md).
AMR_TOTP = ("pwd", "otp", "mfa")
AMR_BACKUP = ("pwd", "mfa", "backup_code")
TOTP, BACKUP = "totp", "backup_code"
METHODS = (TOTP, BACKUP)


@dataclass(frozen=True, slots=True)
class TwoFactorPolicy:
    challenge_ttl: timedelta = timedelta(minutes=5)
    challenge_attempts: int = 5
    account_attempts: int = 100
    window: int = 1
    enrollment_ttl: timedelta = timedelta(minutes=10)
    backup_codes: int = 10

    @classmethod
    def from_settings(cls, s: TwoFactorSettings) -> TwoFactorPolicy:
        return cls(
            challenge_ttl=s.challenge_ttl,
            challenge_attempts=s.challenge_attempts,
            account_attempts=s.account_attempts,
            window=s.valid_window,
            enrollment_ttl=s.enrollment_ttl,
            backup_codes=s.backup_codes,
        )


@dataclass(frozen=True, slots=True)
class Factor:
    """A second-factor value as the caller sent it: kind `totp` or `backup_code`."""

    kind: str
    value: str


@dataclass(frozen=True, slots=True)
class Enrollment:
    secret: str
    otpauth_uri: str
    qr_png: bytes
    expires_in: int


@dataclass(frozen=True, slots=True)
class TwoFactorStatus:
    enabled: bool
    enabled_at: int
    backup_codes_remaining: int
    enrollment_pending: bool


def challenge_invalid() -> Unauthenticated:
    return Unauthenticated(
        "MFA challenge expired, used or out of attempts: log in again",
        reason="MFA_CHALLENGE_INVALID",
    )


def reauth_failed() -> PermissionDenied:
    return PermissionDenied("password or code is wrong", reason="REAUTHENTICATION_FAILED")


@dataclass
class TwoFactorService:
    auth: AuthService
    repo: TwoFactorRepository
    crypto: SecondFactorCrypto
    policy: TwoFactorPolicy = field(default_factory=TwoFactorPolicy)

    # -- the gate AuthService asks after a password verified ------------------------------

    async def enabled(self, user_id: int) -> bool:
        state = await self.repo.get(user_id)
        return state is not None and state.enabled

    async def challenge(
        self, user: User, app_id: int, *, ip: str, user_agent: str, device_name: str
    ) -> MfaChallengeIssued | None:
        if not await self.enabled(user.id):
            return None
        now = self.auth.clock()
        challenge_id = self.auth.opaque.new_refresh_token()  # 256 random bits
        await self.repo.create_challenge(
            MfaChallengeRecord(
                id_hash=self.auth.opaque.hash(challenge_id),
                user_id=user.id,
                app_id=app_id,
                user_agent=user_agent,
                ip=ip,
                device_name=device_name,
                created_at=now,
                expires_at=now + self.policy.challenge_ttl,
            )
        )
        await self._emit(SecurityEvent.MFA_CHALLENGE, user.id, details={"app_id": app_id})
        ttl = int(self.policy.challenge_ttl.total_seconds())
        return MfaChallengeIssued(challenge_id, METHODS, ttl, user.id)

    async def refuse_single_factor(self, user: User, *, api: str) -> None:
        """For login paths that cannot carry a second factor: no token for a TOTP user."""
        if await self.enabled(user.id):
            await self._emit(
                SecurityEvent.MFA_FAIL,
                user.id,
                outcome="failure",
                details={"reason": "second_factor_unsupported", "api": api},
            )
            raise MfaRequired()

    # -- login, second step -----------------------------------------------------------------

    async def verify(self, challenge_id: str, factor: Factor | None) -> IssuedTokens:
        if not challenge_id or len(challenge_id) > MAX_TOKEN_CHARS:
            raise InvalidArgument("challenge_id is required", reason="CHALLENGE_ID_REQUIRED")
        parsed = self._parse(factor)
        now = self.auth.clock()
        id_hash = self.auth.opaque.hash(challenge_id)
        record = await self.repo.reserve_challenge(
            id_hash, now=now, cap=self.policy.challenge_attempts
        )
        if record is None:
            await self._emit(
                SecurityEvent.MFA_FAIL, None, outcome="failure", details={"reason": "challenge"}
            )
            raise challenge_invalid()
        state = await self.repo.get(record.user_id)
        if state is None or not state.enabled:
            raise challenge_invalid()
        amr = await self._check(state, parsed)
        if amr is None:
            left = max(0, self.policy.challenge_attempts - record.attempts)
            raise Unauthenticated(
                "invalid code", reason="MFA_CODE_INVALID", metadata={"attempts-left": str(left)}
            )
        if not await self.repo.consume_challenge(id_hash, now=now):
            raise challenge_invalid()
        user = await self.auth.users.get_by_id(record.user_id)
        if user is None:
            raise challenge_invalid()
        client = ClientInfo(
            ip=record.ip, user_agent=record.user_agent, device_name=record.device_name
        )
        tokens = await self.auth.open_session(user, record.app_id, client, amr=amr)
        await self._emit(SecurityEvent.MFA_SUCCESS, user.id, details={"method": parsed.kind})
        return tokens

    # -- enrolment --------------------------------------------------------------------------

    async def begin(self, caller: AccessClaims, password: str) -> Enrollment:
        user = await self._reauthenticate_password(caller, password)
        now = self.auth.clock()
        secret = self.crypto.new_secret()
        expires = now + self.policy.enrollment_ttl
        sealed = self.crypto.seal(user.id, secret)
        if not await self.repo.start_enrollment(user.id, sealed, expires_at=expires, now=now):
            raise FailedPrecondition("TOTP is already enabled", reason="TOTP_ALREADY_ENABLED")
        b32, uri, png = self.crypto.provisioning(secret, user.email)
        await self._emit(SecurityEvent.MFA_ENROLL_STARTED, user.id)
        return Enrollment(b32, uri, png, int(self.policy.enrollment_ttl.total_seconds()))

    async def confirm(self, caller: AccessClaims, totp_code: str) -> tuple[list[str], int]:
        code = self.crypto.parse_code(totp_code)
        if code is None:
            raise self._malformed(TOTP)
        now = self.auth.clock()
        state = await self.repo.get(caller.user_id)
        if state is not None and state.enabled:
            raise FailedPrecondition("TOTP is already enabled", reason="TOTP_ALREADY_ENABLED")
        pending = None if state is None else state.pending_sealed
        if (
            state is None
            or pending is None
            or state.pending_expires_at is None
            or state.pending_expires_at <= now
        ):
            raise FailedPrecondition(
                "no TOTP enrolment in progress: call BeginTotpEnrollment",
                reason="TOTP_ENROLLMENT_NOT_STARTED",
            )
        if not await self.repo.reserve_attempt(caller.user_id, cap=self.policy.account_attempts):
            await self._emit(SecurityEvent.MFA_FAIL_MAX, caller.user_id, outcome="failure")
            raise self._locked()
        secret = self.crypto.open(caller.user_id, pending)
        step = self.crypto.match(
            secret, code, step=self.crypto.step(now), window=self.policy.window, after=None
        )
        if step is None:
            await self._emit(
                SecurityEvent.MFA_FAIL,
                caller.user_id,
                outcome="failure",
                details={"action": "confirm_enrollment"},
            )
            raise InvalidArgument(
                "the code does not match the new secret", reason="TOTP_CODE_INVALID"
            )
        codes = self.crypto.new_backup_codes(self.policy.backup_codes)
        hashes = self.crypto.hash_backup_codes(codes)
        if not await self.repo.activate(
            caller.user_id, pending, step=step, code_hashes=hashes, now=now
        ):
            raise FailedPrecondition(
                "the enrolment changed meanwhile: start again", reason="TOTP_ENROLLMENT_CHANGED"
            )
        revoked = await self._end_other_sessions(caller, "mfa_enabled")
        await self._emit(SecurityEvent.MFA_ENABLED, caller.user_id, details={"revoked": revoked})
        return codes, revoked

    async def disable(self, caller: AccessClaims, password: str, factor: Factor | None) -> int:
        await self._reauthenticate(caller, password, factor)
        await self.repo.disable(caller.user_id)
        revoked = await self._end_other_sessions(caller, "mfa_disabled")
        await self._emit(SecurityEvent.MFA_DISABLED, caller.user_id, details={"revoked": revoked})
        return revoked

    async def regenerate(
        self, caller: AccessClaims, password: str, factor: Factor | None
    ) -> list[str]:
        await self._reauthenticate(caller, password, factor)
        codes = self.crypto.new_backup_codes(self.policy.backup_codes)
        hashes = self.crypto.hash_backup_codes(codes)
        if not await self.repo.replace_backup_codes(caller.user_id, hashes, now=self.auth.clock()):
            raise self._not_enabled()
        await self._emit(SecurityEvent.MFA_BACKUP_CODES_REGENERATED, caller.user_id)
        return codes

    async def status(self, user_id: int) -> TwoFactorStatus:
        state = await self.repo.get(user_id)
        if state is None:
            return TwoFactorStatus(False, 0, 0, False)
        now = self.auth.clock()
        pending = state.pending_expires_at is not None and state.pending_expires_at > now
        left = await self.repo.backup_codes_left(user_id) if state.enabled else 0
        enabled_at = int(state.enabled_at.timestamp()) if state.enabled_at else 0
        return TwoFactorStatus(state.enabled, enabled_at, left, pending)

    async def export_section(self, user_id: int) -> object:
        """The user's data export: the status only, never the secret or the codes."""
        state = await self.repo.get(user_id)
        enabled = state is not None and state.enabled
        enabled_at = state.enabled_at if state is not None else None
        return {
            "totp_enabled": enabled,
            "enrolled_at": enabled_at.isoformat() if enabled_at is not None else None,
            "backup_codes_remaining": await self.repo.backup_codes_left(user_id) if enabled else 0,
        }

    # -- checking a factor ------------------------------------------------------------------

    def _parse(self, factor: Factor | None) -> Factor:
        if factor is None or not factor.value:
            raise InvalidArgument("a totp_code or backup_code is required", reason="CODE_REQUIRED")
        if factor.kind == TOTP:
            code = self.crypto.parse_code(factor.value)
        elif factor.kind == BACKUP:
            code = self.crypto.parse_backup_code(factor.value)
        else:  # pragma: no cover - the API builds only these two
            raise InvalidArgument("unknown second factor", reason="CODE_REQUIRED")
        if code is None:
            raise self._malformed(factor.kind)
        return Factor(factor.kind, code)

    async def _check(self, state: TotpState, factor: Factor) -> tuple[str, ...] | None:
        """The amr of a valid factor (spent: step stored or code used), None when wrong."""
        user_id, now = state.user_id, self.auth.clock()
        if factor.kind == BACKUP:
            digest = self.crypto.hash_backup_code(factor.value)
            if await self.repo.use_backup_code(user_id, digest, now=now):
                await self.repo.clear_failures(user_id)
                return AMR_BACKUP
            await self._emit(
                SecurityEvent.MFA_FAIL, user_id, outcome="failure", details={"method": BACKUP}
            )
            return None
        # Counted before the HMAC: at the cap no code is even computed (C5).
        if not await self.repo.reserve_attempt(user_id, cap=self.policy.account_attempts):
            await self._emit(SecurityEvent.MFA_FAIL_MAX, user_id, outcome="failure")
            raise self._locked()
        if state.secret_sealed is None:  # pragma: no cover - enabled rows have a secret
            return None
        secret = self.crypto.open(user_id, state.secret_sealed)
        step, window = self.crypto.step(now), self.policy.window
        matched = self.crypto.match(
            secret, factor.value, step=step, window=window, after=state.last_used_step
        )
        if matched is not None and await self.repo.spend_step(user_id, matched):
            return AMR_TOTP
        # A right code whose step is already used (or just won by a concurrent call): replay.
        replay = matched is not None or (
            self.crypto.match(secret, factor.value, step=step, window=window, after=None)
            is not None
        )
        event = SecurityEvent.MFA_REPLAY if replay else SecurityEvent.MFA_FAIL
        await self._emit(event, user_id, outcome="failure", details={"method": TOTP})
        return None

    async def _reauthenticate_password(self, caller: AccessClaims, password: str) -> User:
        user = await self.auth.users.get_by_id(caller.user_id)
        if user is None:
            raise Unauthenticated("account not found", reason="TOKEN_REVOKED")
        if not password:
            raise PermissionDenied(
                "the password is required to change two-factor settings",
                reason="REAUTHENTICATION_REQUIRED",
            )
        try:
            await self.auth.authenticate(user.email, password)
        except Unauthenticated:
            raise reauth_failed() from None
        return user

    async def _reauthenticate(
        self, caller: AccessClaims, password: str, factor: Factor | None
    ) -> TotpState:
        if not password or factor is None or not factor.value:
            raise PermissionDenied(
                "the password and a current code are required", reason="REAUTHENTICATION_REQUIRED"
            )
        parsed = self._parse(factor)
        await self._reauthenticate_password(caller, password)
        state = await self.repo.get(caller.user_id)
        if state is None or not state.enabled:
            raise self._not_enabled()
        if await self._check(state, parsed) is None:
            raise reauth_failed()
        return state

    async def _end_other_sessions(self, caller: AccessClaims, reason: str) -> int:
        revoked = await self.auth.revoke_all_sessions(
            caller.user_id, reason=reason, keep=caller.session_id
        )
        await self._emit(
            SecurityEvent.SESSION_REVOKED,
            caller.user_id,
            details={"reason": reason, "count": revoked},
        )
        return revoked

    @staticmethod
    def _malformed(kind: str) -> InvalidArgument:
        if kind == TOTP:
            return InvalidArgument(
                "totp_code must be exactly 6 digits 0-9", reason="CODE_MALFORMED"
            )
        return InvalidArgument("backup_code is malformed", reason="CODE_MALFORMED")

    @staticmethod
    def _locked() -> Unauthenticated:
        return Unauthenticated("too many wrong codes: use a backup code", reason="MFA_LOCKED")

    @staticmethod
    def _not_enabled() -> FailedPrecondition:
        return FailedPrecondition("TOTP is not enabled", reason="TOTP_NOT_ENABLED")

    async def _emit(
        self,
        event: SecurityEvent,
        user_id: int | None,
        *,
        outcome: str = "success",
        details: Mapping[str, Detail] | None = None,
    ) -> None:
        await self.auth.events.emit(event, user_id=user_id, outcome=outcome, details=details)
