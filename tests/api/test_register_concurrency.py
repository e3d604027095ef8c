"""K6: 1,000 concurrent Registers of one address (with case variants) make exactly one user."""

from __future__ import annotations

import asyncio
from collections import Counter

import grpc
import pytest
from api_helpers import STRONG

from sso_proto.sso.v1 import auth_pb2, auth_pb2_grpc

VARIANTS = ["race@example.com", "RACE@example.com", "Race@Example.COM", "race@EXAMPLE.com"]


@pytest.mark.parametrize("count", [1000])
async def test_concurrent_registers_of_one_email_on_postgres(sso_pg_redis, count: int) -> None:
    stub = auth_pb2_grpc.AuthStub(sso_pg_redis.channel)
    results = await asyncio.gather(
        *(
            stub.Register(auth_pb2.RegisterRequest(email=VARIANTS[i % 4], password=STRONG))
            for i in range(count)
        ),
        return_exceptions=True,
    )
    codes = Counter(r.code().name if isinstance(r, grpc.aio.AioRpcError) else "OK" for r in results)
    assert codes == {"OK": 1, "ALREADY_EXISTS": count - 1}, codes
    user = await sso_pg_redis.container.auth.users.get_by_email("race@example.com")
    assert user is not None
