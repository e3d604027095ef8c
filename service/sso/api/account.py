"""`sso.v1.Account`: the servicer, composed from the lifecycle and two-factor halves.

Why this module exists: one gRPC service, two features built side by side. Each
half lives in its own module (:mod:`sso.api.account_lifecycle`,
:mod:`sso.api.account_mfa`) and this class puts them together so the server
registers a single ``Account`` servicer.
"""

from __future__ import annotations

from sso.api.account_lifecycle import LifecycleRpcs
from sso.api.account_mfa import TwoFactorRpcs
from sso_proto.sso.v1 import account_pb2_grpc


class AccountV1(LifecycleRpcs, TwoFactorRpcs, account_pb2_grpc.AccountServicer):
    """Every `sso.v1.Account` RPC; the halves' constructors take keyword arguments."""
