"""GDPR export: one extension point where each feature contributes what it holds about a user.

Why this exists: a data-access request (admin `ExportUser`, the user's own
`ExportMyData`) must return *everything* held about a person, and every feature
(profile, sessions, audit trail, account lifecycle, two-factor, …) owns a piece
of that data. Rather than one function that knows every table, each feature
registers a named *section*: an async callable `user_id -> JSON-able value`.
`export(user_id)` gathers them all into one dict keyed by section name.

Rules for a section:
- return only JSON-able values (dict/list/str/int/float/bool/None); datetimes
  as ISO 8601 strings;
- never return secrets or verifiers (password hashes, TOTP secrets, backup-code
  hashes, token hashes): say that they exist instead (e.g. ``{"enabled": True}``);
- return ``None`` (or an empty list) when the user has nothing in that section.

Example::

    from sso.domain.export import UserExport

    exporter = UserExport()

    async def totp_section(user_id: int) -> object:
        enrolment = await repo.get(user_id)
        return None if enrolment is None else {"enabled": True, "created_at": ...}

    exporter.register("two_factor", totp_section)
    document = await exporter.export(42)   # {"two_factor": {...}, "profile": {...}, ...}

The composition root (`sso.app`) owns one `UserExport` instance and passes it
to every feature that registers a section and to every servicer that exports.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

JsonValue = object
Section = Callable[[int], Awaitable[JsonValue]]


class UserExport:
    """A registry of named export sections; `export` runs them all for one user."""

    def __init__(self) -> None:
        self._sections: dict[str, Section] = {}

    def register(self, name: str, section: Section) -> None:
        """Add a section; a name may be registered once (a clash is a programming error)."""
        if not name or name in self._sections:
            raise ValueError(f"export section {name!r} is empty or already registered")
        self._sections[name] = section

    @property
    def sections(self) -> tuple[str, ...]:
        """The registered section names, in registration order."""
        return tuple(self._sections)

    async def export(self, user_id: int) -> dict[str, JsonValue]:
        """Everything held about `user_id`: ``{section name: value}`` in registration order.

        Sections run one after another (they share one database pool; an export
        is rare and small), so a failing section raises instead of yielding a
        silently incomplete document.
        """
        document: dict[str, JsonValue] = {}
        for name, section in self._sections.items():
            document[name] = await section(user_id)
        return document
