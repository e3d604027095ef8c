"""The password policy applied to new passwords (Register, ChangePassword, reset).

Why this module exists: checklist rows A1-A4 and decision 6. Length is counted
in Unicode code points; the maximum is checked first, in O(1), so a 1 MiB
password is refused before anything else looks at it (no normalisation, no
regex, no hashing). There are no composition rules; instead the password must
not be a common one (a shipped blocklist, `data/common-passwords.txt`, compared
case-insensitively), a common one dressed with digits and symbols
("Password2025!"), a handful of repeated characters, or built from context words
(the product's name, the user's email) plus digits ("Sso2025!Sso2025!").

The policy never changes the password: it only says yes or no. Each refusal has
its own machine-readable reason: PASSWORD_TOO_LONG and PASSWORD_INVALID
(`InvalidArgument`), PASSWORD_TOO_SHORT and PASSWORD_COMMON (`WeakPassword`).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path

from sso.config import PasswordSettings
from sso.errors import InvalidArgument, WeakPassword

__all__ = [
    "DEFAULT_BLOCKLIST_PATH",
    "PRODUCT_WORDS",
    "PasswordPolicy",
    "load_blocklist",
]

DEFAULT_BLOCKLIST_PATH = Path(__file__).with_name("data") / "common-passwords.txt"

# Words anyone would try first against this product.
PRODUCT_WORDS: tuple[str, ...] = ("sso", "single sign-on", "single sign on", "singlesignon")

# C0/C1 control characters (NUL included) and lone surrogates (not encodable as UTF-8).
_INVALID_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# Context words shorter than this are ignored (they would match too much).
_MIN_CONTEXT_WORD = 3
# Fewer distinct code points than this is "aaaaaaaaaaaa"-style repetition.
_MIN_DISTINCT = 4


@functools.cache
def load_blocklist(path: Path = DEFAULT_BLOCKLIST_PATH) -> frozenset[str]:
    """Read a blocklist file (one password per line, '#' comments) once per process."""
    words: set[str] = set()
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            word = line.strip()
            if word and not word.startswith("#"):
                words.add(word.lower())
    return frozenset(words)


def _skeleton(text: str) -> str:
    """Lowercase letters and digits only: "Single Sign-On!" -> "singlesignon"."""
    return "".join(ch for ch in unicodedata.normalize("NFKC", text).lower() if ch.isalnum())


def _strip_decorations(text: str) -> str:
    """Drop leading and trailing characters that are not letters: "!Dragon2025!" -> "dragon"."""
    start, end = 0, len(text)
    while start < end and not text[start].isalpha():
        start += 1
    while end > start and not text[end - 1].isalpha():
        end -= 1
    return text[start:end]


class PasswordPolicy:
    """Length bounds in code points plus a blocklist; `check` raises or returns None."""

    def __init__(
        self,
        min_length: int = 12,
        max_length: int = 128,
        blocklist: Iterable[str] | None = None,
        *,
        product_words: Iterable[str] = PRODUCT_WORDS,
    ) -> None:
        if not 1 <= min_length <= max_length:
            raise ValueError("need 1 <= min_length <= max_length")
        self.min_length = min_length
        self.max_length = max_length
        self._blocklist: frozenset[str] = (
            load_blocklist() if blocklist is None else frozenset(w.lower() for w in blocklist)
        )
        self._product_words = self._context_skeletons(product_words)

    @classmethod
    def from_settings(cls, settings: PasswordSettings) -> PasswordPolicy:
        return cls(settings.min_length, settings.max_length)

    def check(self, password: str, *, context_words: Iterable[str] = ()) -> None:
        """Raise `InvalidArgument`/`WeakPassword` when `password` may not be set.

        `context_words` are user-specific words to refuse (email local part and
        domain, display name, app name); the product's own name is always refused.
        """
        if not isinstance(password, str):
            raise InvalidArgument("password must be a string", reason="PASSWORD_INVALID")
        length = len(password)  # code points, O(1): checked before anything else
        if length > self.max_length:
            raise InvalidArgument(
                f"password must be at most {self.max_length} characters",
                reason="PASSWORD_TOO_LONG",
                metadata={"max_length": str(self.max_length)},
            )
        if length < self.min_length:
            raise WeakPassword(
                f"password must be at least {self.min_length} characters",
                reason="PASSWORD_TOO_SHORT",
                metadata={"min_length": str(self.min_length)},
            )
        if _INVALID_CHARS.search(password):
            raise InvalidArgument(
                "password must not contain control characters", reason="PASSWORD_INVALID"
            )
        if self._is_common(password, context_words):
            raise WeakPassword(
                "password is too common or too easy to guess; choose a longer or less usual one",
                reason="PASSWORD_COMMON",
            )

    def _is_common(self, password: str, context_words: Iterable[str]) -> bool:
        lowered = unicodedata.normalize("NFKC", password).lower()
        if len(set(lowered)) < _MIN_DISTINCT:
            return True
        if lowered in self._blocklist or _strip_decorations(lowered) in self._blocklist:
            return True
        # The password with every context word and every non-letter removed: if
        # nothing is left, it was only context words, digits and symbols.
        words = self._product_words + self._context_skeletons(context_words)
        rest = _skeleton(lowered)
        found = False
        for word in words:
            if word in rest:
                found = True
                rest = rest.replace(word, "")
        return found and not any(ch.isalpha() for ch in rest)

    @staticmethod
    def _context_skeletons(words: Iterable[str]) -> tuple[str, ...]:
        skeletons = set()
        for word in words:
            # Also each part of "jane.doe@example.com" / "Acme Corp" on its own.
            for part in (word, *re.split(r"[^\w]+|_", word)):
                skeleton = _skeleton(part)
                if len(skeleton) >= _MIN_CONTEXT_WORD:
                    skeletons.add(skeleton)
        # Longest first, so "singlesignon" goes before "sso" could split it.
        return tuple(sorted(skeletons, key=len, reverse=True))
