"""Rules for importing the Go SSO service's users and apps (issue 9), without any I/O.

Why this module exists: the import must be decided row by row the same way
whatever the backend, be idempotent, and never overwrite our data silently.
`plan_import` takes what the old database holds and what ours holds and says,
for every legacy row, exactly one of:

- **imported**: new here; inserted with its id (so `uid` claims, `IsAdmin(id)`
  and `app_id` answer as before), email normalised like a registration.
- **unchanged**: already here as imported (a user who has logged in since and
  whose hash is now argon2id counts as unchanged: that is the migration working).
- **updated**: the only change a re-run applies: a user whose hash here is still
  the legacy bcrypt hash and whose old hash has changed (a password change in
  the Go service while both ran). Carrying it over keeps an old, possibly
  compromised password from staying valid here; no password set here is lost.
- **conflict**: the id or the address/name is here with different data (email,
  admin flag, app name or secret differ, or the address belongs to another id).
  Nothing is written for the row; an operator decides.
- **skipped**: the row cannot be imported: an id out of range, an invalid
  address, two legacy addresses that normalise to one (all of them are skipped:
  which person owns the address is not ours to guess), a hash that is not bcrypt,
  an empty app name or secret.

Reports carry ids and reason codes, never an address, hash or secret.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from sso.domain.emails import normalise_email_syntax
from sso.errors import InvalidArgument

# The old service's ids: users int64, apps int32 (the legacy API's app_id type).
MAX_USER_ID = 2**63 - 1
MAX_APP_ID = 2**31 - 1
MAX_APP_NAME_CHARS = 256
MAX_APP_SECRET_CHARS = 4096
# Modular-crypt bcrypt: $2a$/$2b$/$2y$, a two-digit cost 04-31, 22 + 31 characters.
BCRYPT_HASH = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")


@dataclass(frozen=True, slots=True)
class LegacyUser:
    """A row of the old `users` table (`pass_hash` decoded as ASCII text)."""

    id: int
    email: str
    password_hash: str
    is_admin: bool


@dataclass(frozen=True, slots=True)
class LegacyApp:
    """A row of the old `apps` table."""

    id: int
    name: str
    secret: str


@dataclass(frozen=True, slots=True)
class CurrentUser:
    """What our `users` table holds for an id."""

    id: int
    email: str
    password_hash: str
    is_admin: bool


@dataclass(frozen=True, slots=True)
class CurrentApp:
    """What our `apps` table holds for an id; `secret` None when it cannot be decrypted."""

    id: int
    name: str
    secret: str | None


@dataclass(frozen=True, slots=True)
class RowNote:
    """One legacy row that was skipped, conflicted or updated: ids and a reason code only."""

    table: str
    id: int
    reason: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class HashUpdate:
    user_id: int
    password_hash: str


@dataclass
class ImportPlan:
    """What an import does; `apply` writes exactly `new_users`, `new_apps`, `hash_updates`."""

    users_read: int = 0
    apps_read: int = 0
    new_users: list[LegacyUser] = field(default_factory=list)
    new_apps: list[LegacyApp] = field(default_factory=list)
    hash_updates: list[HashUpdate] = field(default_factory=list)
    users_unchanged: int = 0
    apps_unchanged: int = 0
    skipped: list[RowNote] = field(default_factory=list)
    conflicts: list[RowNote] = field(default_factory=list)
    updated: list[RowNote] = field(default_factory=list)

    def count(self, notes: list[RowNote], table: str) -> int:
        return sum(1 for note in notes if note.table == table)

    @property
    def writes(self) -> int:
        return len(self.new_users) + len(self.new_apps) + len(self.hash_updates)


def is_bcrypt(password_hash: str) -> bool:
    return BCRYPT_HASH.fullmatch(password_hash) is not None


def _normalised(raw: str) -> str | None:
    try:
        return normalise_email_syntax(raw)
    except InvalidArgument:
        return None


def plan_users(
    plan: ImportPlan,
    legacy: Iterable[LegacyUser],
    current_by_id: Mapping[int, CurrentUser],
    current_id_by_email: Mapping[str, int],
) -> None:
    """Decide every legacy user row (see the module docstring for the rules)."""
    valid: list[LegacyUser] = []
    for row in sorted(legacy, key=lambda r: r.id):
        plan.users_read += 1
        email = _normalised(row.email)
        if not 0 < row.id <= MAX_USER_ID:
            plan.skipped.append(RowNote("users", row.id, "invalid_id"))
        elif email is None:
            plan.skipped.append(RowNote("users", row.id, "invalid_email"))
        elif not is_bcrypt(row.password_hash):
            plan.skipped.append(
                RowNote("users", row.id, "not_bcrypt", "pass_hash is not a $2a$/$2b$/$2y$ hash")
            )
        else:
            valid.append(LegacyUser(row.id, email, row.password_hash, row.is_admin))
    by_email: dict[str, list[int]] = defaultdict(list)
    for row in valid:
        by_email[row.email].append(row.id)
    for row in valid:
        same = by_email[row.email]
        if len(same) > 1:
            others = ", ".join(str(i) for i in same if i != row.id)
            plan.skipped.append(
                RowNote("users", row.id, "duplicate_email", f"same address as ids {others}")
            )
            continue
        _decide_user(plan, row, current_by_id.get(row.id), current_id_by_email.get(row.email))


def _decide_user(
    plan: ImportPlan, row: LegacyUser, ours: CurrentUser | None, owner: int | None
) -> None:
    if ours is None:
        if owner is not None:
            plan.conflicts.append(
                RowNote("users", row.id, "email_taken", f"our user {owner} has this address")
            )
        else:
            plan.new_users.append(row)
        return
    if ours.email != row.email:
        plan.conflicts.append(
            RowNote("users", row.id, "email_differs", "this id has another address here")
        )
    elif ours.is_admin != row.is_admin:
        plan.conflicts.append(
            RowNote(
                "users",
                row.id,
                "admin_differs",
                f"is_admin is {row.is_admin} in the old database, {ours.is_admin} here",
            )
        )
    elif ours.password_hash == row.password_hash or not is_bcrypt(ours.password_hash):
        plan.users_unchanged += 1  # same row, or migrated already (argon2id since a login)
    else:
        plan.hash_updates.append(HashUpdate(row.id, row.password_hash))
        plan.updated.append(
            RowNote("users", row.id, "password_changed", "bcrypt hash changed in the old database")
        )


def plan_apps(
    plan: ImportPlan,
    legacy: Iterable[LegacyApp],
    current_by_id: Mapping[int, CurrentApp],
    current_id_by_name: Mapping[str, int],
) -> None:
    """Decide every legacy app row: same id, name and secret, or a note saying why not."""
    for row in sorted(legacy, key=lambda r: r.id):
        plan.apps_read += 1
        if not 0 < row.id <= MAX_APP_ID:
            plan.skipped.append(RowNote("apps", row.id, "invalid_id"))
        elif not row.name.strip() or len(row.name) > MAX_APP_NAME_CHARS or "\x00" in row.name:
            plan.skipped.append(RowNote("apps", row.id, "invalid_name"))
        elif not row.secret or len(row.secret) > MAX_APP_SECRET_CHARS or "\x00" in row.secret:
            plan.skipped.append(RowNote("apps", row.id, "invalid_secret"))
        else:
            _decide_app(plan, row, current_by_id.get(row.id), current_id_by_name.get(row.name))


def _decide_app(
    plan: ImportPlan, row: LegacyApp, ours: CurrentApp | None, owner: int | None
) -> None:
    if ours is None:
        if owner is not None:
            plan.conflicts.append(
                RowNote("apps", row.id, "name_taken", f"our app {owner} has this name")
            )
        else:
            plan.new_apps.append(row)
        return
    differs = [
        what
        for what, same in (("name", ours.name == row.name), ("secret", ours.secret == row.secret))
        if not same
    ]
    if ours.secret is None:
        differs = [*[d for d in differs if d != "secret"], "secret (unreadable here)"]
    if differs:
        plan.conflicts.append(
            RowNote("apps", row.id, "app_differs", "differs here: " + ", ".join(differs))
        )
    else:
        plan.apps_unchanged += 1


def plan_import(
    users: Iterable[LegacyUser],
    apps: Iterable[LegacyApp],
    current_users: Iterable[CurrentUser],
    current_apps: Iterable[CurrentApp],
) -> ImportPlan:
    """The whole decision for one import run (pure: the same inputs give the same plan)."""
    plan = ImportPlan()
    ours = list(current_users)
    plan_users(plan, users, {u.id: u for u in ours}, {u.email: u.id for u in ours})
    our_apps = list(current_apps)
    plan_apps(plan, apps, {a.id: a for a in our_apps}, {a.name: a.id for a in our_apps})
    for notes in (plan.skipped, plan.conflicts, plan.updated):
        notes.sort(key=lambda n: (n.table != "users", n.id))  # users first, then apps; by id
    return plan
