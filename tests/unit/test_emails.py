"""Email syntax rules and normalisation: one mailbox, one account."""

from __future__ import annotations

import pytest

from sso.domain.emails import normalise_email_syntax
from sso.errors import InvalidArgument


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Jane.Doe@Example.COM", "jane.doe@example.com"),
        ("  jane@example.com ", "jane@example.com"),
        ("JANE@EXAMPLE.COM", "jane@example.com"),
        ("Jose\u0301@example.com", "jos\u00e9@example.com"),  # NFC: one mailbox, one form
    ],
)
def test_normalisation(raw: str, expected: str) -> None:
    assert normalise_email_syntax(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "plainaddress",
        "a@b",
        "a\x00b@example.com",
        "a\r\nb@example.com",
        "x" * 65 + "@example.com",
        "a@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 63 + "." + "e" * 63 + ".com",
        "a@example..com",
    ],
)
def test_rejected(raw: str) -> None:
    with pytest.raises(InvalidArgument):
        normalise_email_syntax(raw)
