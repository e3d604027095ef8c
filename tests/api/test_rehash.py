"""A5: after the argon2 parameters are raised, the next successful login rewrites the hash."""

from __future__ import annotations

import re
from pathlib import Path

from api_helpers import STRONG
from sso_harness import make_settings, start, stop

from sso.config import PasswordSettings
from sso_proto.sso.v1 import auth_pb2, auth_pb2_grpc

PHC = re.compile(r"^\$argon2id\$v=19\$m=(\d+),t=(\d+),p=1\$")


async def test_login_rehashes_when_parameters_change(tmp_path: Path, sqlite_url: str) -> None:
    settings = make_settings(tmp_path, sqlite_url)
    running = await start(settings)
    try:
        stub = auth_pb2_grpc.AuthStub(running.channel)
        await stub.Register(auth_pb2.RegisterRequest(email="re@example.com", password=STRONG))
        user = await running.container.auth.users.get_by_email("re@example.com")
        assert user is not None
        assert PHC.match(user.password_hash)
        assert PHC.match(user.password_hash).groups() == ("8192", "1")  # type: ignore[union-attr]
    finally:
        await stop(running)

    stronger = settings.model_copy(
        update={"passwords": PasswordSettings(memory_kib=19456, time_cost=2, workers=2)}
    )
    running = await start(stronger)
    try:
        stub = auth_pb2_grpc.AuthStub(running.channel)
        app_id = running.app.id
        await stub.Login(
            auth_pb2.LoginRequest(email="re@example.com", password=STRONG, app_id=app_id)
        )
        user = await running.container.auth.users.get_by_email("re@example.com")
        assert user is not None
        assert PHC.match(user.password_hash).groups() == ("19456", "2")  # type: ignore[union-attr]
        # ... and the rewritten hash still verifies.
        await stub.Login(
            auth_pb2.LoginRequest(email="re@example.com", password=STRONG, app_id=app_id)
        )
    finally:
        await stop(running)
