"""sso.v1.Sessions: a user lists and ends their own sessions, identified by a bearer token."""

from __future__ import annotations

import grpc
from api_helpers import STRONG, expect_error, reason_of

from sso_proto.sso.v1 import auth_pb2, auth_pb2_grpc, sessions_pb2, sessions_pb2_grpc


async def _sessions(sso_server, email: str, count: int) -> list[auth_pb2.TokenPair]:  # type: ignore[no-untyped-def]
    auth = auth_pb2_grpc.AuthStub(sso_server.channel)
    await auth.Register(auth_pb2.RegisterRequest(email=email, password=STRONG))
    pairs: list[auth_pb2.TokenPair] = []
    for i in range(count):
        options = [("grpc.primary_user_agent", f"agent-{i}/1.0")]
        async with grpc.aio.insecure_channel(sso_server.target, options=options) as channel:
            resp = await auth_pb2_grpc.AuthStub(channel).Login(
                auth_pb2.LoginRequest(
                    email=email, password=STRONG, app_id=sso_server.app.id, device_name=f"dev{i}"
                )
            )
        pairs.append(resp.tokens)
    return pairs


def bearer(pair: auth_pb2.TokenPair) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {pair.access_token}"),)


async def test_list_revoke_one_and_all(sso_server) -> None:
    stub = sessions_pb2_grpc.SessionsStub(sso_server.channel)
    auth = auth_pb2_grpc.AuthStub(sso_server.channel)
    a, b, c = await _sessions(sso_server, "s@example.com", 3)
    other = (await _sessions(sso_server, "other@example.com", 1))[0]

    listed = (
        await stub.ListSessions(sessions_pb2.ListSessionsRequest(), metadata=bearer(a))
    ).sessions
    assert {s.session_id for s in listed} == {a.session_id, b.session_id, c.session_id}
    assert [s.current for s in listed if s.session_id == a.session_id] == [True]
    assert {s.device_name for s in listed} == {"dev0", "dev1", "dev2"}
    assert all(s.ip == "127.0.0.1" and s.expires_at > s.created_at for s in listed)
    assert any(s.user_agent.startswith("agent-1") for s in listed)

    # Another user's session is "not found", never "forbidden".
    error = await expect_error(
        stub.RevokeSession(
            sessions_pb2.RevokeSessionRequest(session_id=other.session_id), metadata=bearer(a)
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    assert reason_of(error) == "SESSION_NOT_FOUND"

    # Validated once, so the verified-token cache holds it: revocation must still win.
    await auth.ValidateToken(auth_pb2.ValidateTokenRequest(token=b.access_token))
    resp = await stub.RevokeSession(
        sessions_pb2.RevokeSessionRequest(session_id=b.session_id), metadata=bearer(a)
    )
    assert resp.revoked
    error = await expect_error(
        auth.ValidateToken(auth_pb2.ValidateTokenRequest(token=b.access_token)),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    assert reason_of(error) == "TOKEN_REVOKED"

    resp_all = await stub.RevokeAllSessions(
        sessions_pb2.RevokeAllSessionsRequest(keep_current=True), metadata=bearer(a)
    )
    assert resp_all.revoked == 1  # c; a is kept, b was already gone
    await auth.ValidateToken(auth_pb2.ValidateTokenRequest(token=a.access_token))
    await expect_error(
        auth.Refresh(auth_pb2.RefreshRequest(refresh_token=c.refresh_token)),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    # The other user is untouched.
    await auth.ValidateToken(auth_pb2.ValidateTokenRequest(token=other.access_token))

    resp_all = await stub.RevokeAllSessions(
        sessions_pb2.RevokeAllSessionsRequest(), metadata=bearer(a)
    )
    assert resp_all.revoked == 1
    await expect_error(
        stub.ListSessions(sessions_pb2.ListSessionsRequest(), metadata=bearer(a)),
        grpc.StatusCode.UNAUTHENTICATED,
    )


async def test_missing_or_bad_bearer_is_unauthenticated(sso_server) -> None:
    stub = sessions_pb2_grpc.SessionsStub(sso_server.channel)
    for metadata in [(), (("authorization", "Basic abc"),), (("authorization", "Bearer nope"),)]:
        error = await expect_error(
            stub.ListSessions(sessions_pb2.ListSessionsRequest(), metadata=metadata),
            grpc.StatusCode.UNAUTHENTICATED,
        )
        assert reason_of(error) in {"TOKEN_MISSING", "TOKEN_INVALID"}
