"""Email syntax validation and normalisation, so one mailbox maps to one account.

email-validator checks the syntax (RFC 5321 lengths included: 64-octet local
part, 254-octet address) and applies NFC; we then case-fold the whole address
so `Jane@Example.com` and `jane@example.com` are one account. The optional
deliverability check (DNS MX) runs in a thread because it blocks.
"""

from __future__ import annotations

import asyncio

from email_validator import EmailNotValidError, validate_email

from sso.errors import InvalidArgument

MAX_EMAIL_OCTETS = 254
MAX_LOCAL_OCTETS = 64


def normalise_email_syntax(raw: str) -> str:
    """Return the canonical form of an address, or raise `InvalidArgument`."""
    if not raw:
        raise InvalidArgument("email is required", reason="EMAIL_REQUIRED")
    local = raw.strip().rpartition("@")[0]
    if (
        len(raw.encode("utf-8", "surrogatepass")) > MAX_EMAIL_OCTETS
        or len(local.encode("utf-8", "surrogatepass")) > MAX_LOCAL_OCTETS
        or any(ord(c) < 0x20 or ord(c) == 0x7F for c in raw)
    ):
        raise InvalidArgument("invalid email", reason="EMAIL_INVALID")
    try:
        result = validate_email(raw.strip(), check_deliverability=False)
    except EmailNotValidError:
        raise InvalidArgument("invalid email", reason="EMAIL_INVALID") from None
    return result.normalized.casefold()


async def normalise_email(raw: str, *, check_deliverability: bool = False) -> str:
    email = normalise_email_syntax(raw)
    if check_deliverability:
        try:
            await asyncio.to_thread(validate_email, email, check_deliverability=True)
        except EmailNotValidError:
            raise InvalidArgument(
                "email domain does not accept mail", reason="EMAIL_UNDELIVERABLE"
            ) from None
    return email
