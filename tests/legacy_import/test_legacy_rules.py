"""The import's row rules (sso.domain.legacy_import), decided without any database."""

from __future__ import annotations

from legacy_db import hash_go

from sso.domain.legacy_import import (
    CurrentApp,
    CurrentUser,
    LegacyApp,
    LegacyUser,
    RowNote,
    is_bcrypt,
    plan_import,
)

H1 = hash_go("first password 123").decode()
H2 = hash_go("second password 456").decode()
ARGON = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaA"


def reasons(notes: list[RowNote], table: str = "users") -> dict[int, str]:
    return {n.id: n.reason for n in notes if n.table == table}


def test_bcrypt_shapes() -> None:
    assert is_bcrypt(H1) and H1.startswith("$2a$10$")
    assert is_bcrypt(hash_go("x", prefix="$2b$").decode())
    assert is_bcrypt("$2y$" + H1[4:])
    assert not is_bcrypt("$2x$" + H1[4:])  # the buggy-crypt_blowfish marker: not accepted
    assert not is_bcrypt(H1[:-1])
    assert not is_bcrypt(H1.replace("$10$", "$03$"))
    assert not is_bcrypt(ARGON)
    assert not is_bcrypt("")


def test_new_rows_are_normalised_and_bad_rows_reported_with_ids() -> None:
    plan = plan_import(
        [
            LegacyUser(1, "  Alice@Example.COM ", H1, True),
            LegacyUser(2, "not an email", H1, False),
            LegacyUser(3, "carol@example.com", "plaintext", False),
            LegacyUser(4, "Dup@example.com", H1, False),
            LegacyUser(5, "dup@EXAMPLE.com", H2, False),
            LegacyUser(0, "zero@example.com", H1, False),
        ],
        [LegacyApp(1, "web", "s1"), LegacyApp(2, "", "s2"), LegacyApp(3, "cli", "")],
        [],
        [],
    )
    assert [(u.id, u.email, u.is_admin) for u in plan.new_users] == [(1, "alice@example.com", True)]
    assert reasons(plan.skipped) == {
        0: "invalid_id",
        2: "invalid_email",
        3: "not_bcrypt",
        4: "duplicate_email",
        5: "duplicate_email",
    }
    assert reasons(plan.skipped, "apps") == {2: "invalid_name", 3: "invalid_secret"}
    dup = next(n for n in plan.skipped if n.id == 4)
    assert dup.detail == "same address as ids 5"
    # Reports never carry an address, a hash or a secret.
    for note in plan.skipped:
        assert "@" not in note.detail and "$2" not in note.detail.replace("$2a$/$2b$/$2y$", "")
    assert [a.id for a in plan.new_apps] == [1]
    assert plan.users_read == 6 and plan.apps_read == 3


def test_reruns_and_changes_follow_the_conflict_rules() -> None:
    current = [
        CurrentUser(1, "same@example.com", H1, False),  # identical
        CurrentUser(2, "migrated@example.com", ARGON, False),  # logged in since: argon2id
        CurrentUser(3, "other@example.com", H1, False),  # this id has another address here
        CurrentUser(4, "admin@example.com", H1, True),  # admin flag differs
        CurrentUser(5, "pw@example.com", H1, False),  # password changed in the Go service
        CurrentUser(99, "taken@example.com", ARGON, False),  # registered here
    ]
    legacy = [
        LegacyUser(1, "same@example.com", H1, False),
        LegacyUser(2, "migrated@example.com", H2, False),
        LegacyUser(3, "changed@example.com", H1, False),
        LegacyUser(4, "admin@example.com", H1, False),
        LegacyUser(5, "pw@example.com", H2, False),
        LegacyUser(6, "Taken@example.com", H1, False),
        LegacyUser(7, "new@example.com", H2, False),
    ]
    plan = plan_import(legacy, [], current, [])
    assert plan.users_unchanged == 2
    assert reasons(plan.conflicts) == {3: "email_differs", 4: "admin_differs", 6: "email_taken"}
    assert reasons(plan.updated) == {5: "password_changed"}
    assert [(h.user_id, h.password_hash) for h in plan.hash_updates] == [(5, H2)]
    assert [u.id for u in plan.new_users] == [7]
    assert next(n for n in plan.conflicts if n.id == 6).detail == "our user 99 has this address"


def test_app_rules() -> None:
    current = [
        CurrentApp(1, "web", "s1"),
        CurrentApp(2, "api", "other"),
        CurrentApp(3, "renamed", "s3"),
        CurrentApp(4, "sealed", None),
        CurrentApp(10, "mobile", "x"),
    ]
    legacy = [
        LegacyApp(1, "web", "s1"),
        LegacyApp(2, "api", "s2"),
        LegacyApp(3, "old-name", "s3"),
        LegacyApp(4, "sealed", "s4"),
        LegacyApp(5, "mobile", "s5"),
        LegacyApp(6, "new", "s6"),
    ]
    plan = plan_import([], legacy, [], current)
    assert plan.apps_unchanged == 1
    assert reasons(plan.conflicts, "apps") == {
        2: "app_differs",
        3: "app_differs",
        4: "app_differs",
        5: "name_taken",
    }
    details = {n.id: n.detail for n in plan.conflicts}
    assert details[2] == "differs here: secret"
    assert details[3] == "differs here: name"
    assert details[4] == "differs here: secret (unreadable here)"
    assert [a.id for a in plan.new_apps] == [6]
    assert not plan.hash_updates and plan.writes == 1
