"""`sso.domain.export.UserExport`: the registry other features add their GDPR sections to."""

from __future__ import annotations

import pytest

from sso.domain.export import UserExport


async def test_sections_run_in_registration_order_for_the_given_user() -> None:
    exporter = UserExport()
    seen: list[tuple[str, int]] = []

    async def first(user_id: int) -> object:
        seen.append(("first", user_id))
        return {"n": user_id}

    async def second(user_id: int) -> object:
        seen.append(("second", user_id))
        return [user_id, "x"]

    exporter.register("first", first)
    exporter.register("second", second)
    assert exporter.sections == ("first", "second")
    assert await exporter.export(7) == {"first": {"n": 7}, "second": [7, "x"]}
    assert seen == [("first", 7), ("second", 7)]


async def test_a_name_is_registered_once_and_a_failing_section_fails_the_export() -> None:
    exporter = UserExport()

    async def broken(user_id: int) -> object:
        raise RuntimeError("section down")

    exporter.register("broken", broken)
    with pytest.raises(ValueError):
        exporter.register("broken", broken)
    with pytest.raises(ValueError):
        exporter.register("", broken)
    with pytest.raises(RuntimeError):
        await exporter.export(1)  # never a silently incomplete document
