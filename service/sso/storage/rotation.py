"""The statements of refresh-token rotation, the hottest write path of the service.

`SqlSessionRepository.rotate()` (sessions.py) runs these; they live apart so the
concurrency argument can be read in one place (SECURITY_CHECKLIST E1-E4):

- The compare-and-swap `UPDATE refresh_tokens SET used_at = :now WHERE
  token_hash = :h AND used_at IS NULL AND expires_at > :now AND <session live>`
  lets exactly one of N concurrent callers spend a token. On PostgreSQL the
  losers block on the row lock, re-check the WHERE clause against the winner's
  committed row and match nothing; on SQLite the UPDATE takes the database
  write lock, so the whole rotation is serialised.
- PostgreSQL runs the whole rotation as ONE statement (data-modifying CTEs, so
  one round trip and one implicit transaction): spend the token and reserve the
  successor's id from the identity sequence (`replaced_by = nextval(...)`),
  touch the session, insert the successor with that id. Nothing is inserted
  unless the CAS matched, and the CAS only matches a live session.
- SQLite runs the same steps as four statements in one transaction.
- Both paths also return the session's user (the columns an access token and
  the user-exists check need, labelled `u_*`): PostgreSQL joins `users` in the
  same statement, SQLite reads it in the same transaction (`USER_OF_SESSION`),
  so a refresh needs no second lookup.
- When the CAS matches nothing, `CLASSIFY` reads the token, its session and
  its successor in one query and the repository decides NOT_FOUND / REVOKED /
  EXPIRED / GRACE / REUSED, in the order of the port's docstring.
"""

from __future__ import annotations

from sqlalchemy import (
    CTE,
    BindParameter,
    Insert,
    LargeBinary,
    Select,
    bindparam,
    exists,
    func,
    insert,
    select,
    true,
    update,
)

from sso.storage.tables import UtcDateTime, refresh_tokens, sessions, users

rt = refresh_tokens
s = sessions
u = users

# The user's columns as returned next to a session's, prefixed so names do not collide.
USER_PREFIX = "u_"
USER_COLUMNS = (
    u.c.id,
    u.c.email,
    u.c.password_hash,
    u.c.is_admin,
    u.c.email_verified,
    u.c.created_at,
    u.c.tokens_valid_after,
)

# Named parameters shared by the statements below.
NOW: BindParameter[object] = bindparam("now", type_=UtcDateTime())
PRESENTED: BindParameter[object] = bindparam("presented", type_=LargeBinary())
SUCCESSOR: BindParameter[object] = bindparam("successor", type_=LargeBinary())
IDLE_EXPIRES_AT: BindParameter[object] = bindparam("idle_expires_at", type_=UtcDateTime())
SESSION_ID: BindParameter[object] = bindparam("session_id", type_=s.c.id.type)
TOKEN_ID: BindParameter[object] = bindparam("token_id", type_=rt.c.id.type)
NEW_ID: BindParameter[object] = bindparam("new_id", type_=rt.c.id.type)

_session_live = exists().where(
    s.c.id == rt.c.session_id,
    s.c.revoked_at.is_(None),
    s.c.expires_at > NOW,
)

_cas_where = (
    rt.c.token_hash == PRESENTED,
    rt.c.used_at.is_(None),
    rt.c.expires_at > NOW,
    _session_live,
)

# --- SQLite: four statements in one transaction -------------------------------

CAS = update(rt).where(*_cas_where).values(used_at=NOW).returning(rt.c.id, rt.c.session_id)

TOUCH_SESSION = update(s).where(s.c.id == SESSION_ID).values(last_used_at=NOW).returning(*s.c)

INSERT_SUCCESSOR = (
    insert(rt)
    .values(token_hash=SUCCESSOR, session_id=SESSION_ID, created_at=NOW, expires_at=IDLE_EXPIRES_AT)
    .returning(rt.c.id)
)

LINK_SUCCESSOR = update(rt).where(rt.c.id == TOKEN_ID).values(replaced_by=NEW_ID)

USER_OF_SESSION = select(*(c.label(USER_PREFIX + c.name) for c in USER_COLUMNS)).where(
    u.c.id == bindparam("user_id", type_=u.c.id.type)
)


# --- PostgreSQL: one statement --------------------------------------------------


def _pg_rotate() -> Select[tuple[object, ...]]:
    next_id = func.nextval(func.pg_get_serial_sequence(rt.name, rt.c.id.name))
    spent: CTE = (
        update(rt)
        .where(*_cas_where)
        .values(used_at=NOW, replaced_by=next_id)
        .returning(rt.c.id, rt.c.session_id, rt.c.replaced_by)
        .cte("spent")
    )
    touched: CTE = (
        update(s)
        .where(s.c.id == spent.c.session_id)
        .values(last_used_at=NOW)
        .returning(*s.c)
        .cte("touched")
    )
    successor: CTE = (
        insert(rt)
        .from_select(
            ["id", "token_hash", "session_id", "created_at", "expires_at"],
            select(
                spent.c.replaced_by,
                SUCCESSOR,
                spent.c.session_id,
                NOW,
                func.least(IDLE_EXPIRES_AT, touched.c.expires_at, type_=UtcDateTime()),
            ).select_from(spent.join(touched, touched.c.id == spent.c.session_id)),
        )
        .returning(rt.c.expires_at)
        .cte("successor")
    )
    return select(
        *(touched.c[c.name] for c in s.c),
        successor.c.expires_at.label("successor_expires_at"),
        *(c.label(USER_PREFIX + c.name) for c in USER_COLUMNS),
    ).select_from(touched.join(successor, true()).outerjoin(u, u.c.id == touched.c.user_id))


PG_ROTATE = _pg_rotate()

# --- Login: a new session and its first refresh token ------------------------------
# (Parameters are named `p_<column>`: SQLAlchemy reserves a column's own name in VALUES.)
_CREATED_AT: BindParameter[object] = bindparam("p_created_at", type_=UtcDateTime())
_SESSION_VALUES = {
    "id": bindparam("p_id", type_=s.c.id.type),
    "user_id": bindparam("p_user_id", type_=s.c.user_id.type),
    "app_id": bindparam("p_app_id", type_=s.c.app_id.type),
    "user_agent": bindparam("p_user_agent", type_=s.c.user_agent.type),
    "ip": bindparam("p_ip", type_=s.c.ip.type),
    "device_name": bindparam("p_device_name", type_=s.c.device_name.type),
    "created_at": _CREATED_AT,
    "last_used_at": _CREATED_AT,
    "expires_at": bindparam("p_expires_at", type_=UtcDateTime()),
    "amr": bindparam("p_amr", type_=s.c.amr.type),
}
_TOKEN_HASH: BindParameter[object] = bindparam("p_token_hash", type_=LargeBinary())
_TOKEN_EXPIRES: BindParameter[object] = bindparam("p_token_expires_at", type_=UtcDateTime())
# SQLite: two statements in one transaction.
INSERT_SESSION = insert(s).values(_SESSION_VALUES)
INSERT_FIRST_TOKEN = insert(rt).values(
    token_hash=_TOKEN_HASH,
    session_id=bindparam("p_id", type_=rt.c.session_id.type),
    created_at=_CREATED_AT,
    expires_at=_TOKEN_EXPIRES,
)


def _pg_create() -> Insert:
    """PostgreSQL: both inserts as one statement; the token row needs the session's."""
    new_session = INSERT_SESSION.returning(s.c.id).cte("new_session")
    return (
        insert(rt)
        .from_select(
            ["token_hash", "session_id", "created_at", "expires_at"],
            select(_TOKEN_HASH, new_session.c.id, _CREATED_AT, _TOKEN_EXPIRES),
        )
        .add_cte(new_session)
    )


PG_CREATE = _pg_create()

# --- Both: what happened to a token the CAS did not take ------------------------

_succ = rt.alias("succ")

CLASSIFY = (
    select(
        *s.c,
        rt.c.used_at.label("t_used_at"),
        rt.c.expires_at.label("t_expires_at"),
        _succ.c.token_hash.label("succ_hash"),
        _succ.c.used_at.label("succ_used_at"),
        _succ.c.expires_at.label("succ_expires_at"),
        *(c.label(USER_PREFIX + c.name) for c in USER_COLUMNS),
    )
    .select_from(
        rt.join(s, s.c.id == rt.c.session_id)
        .outerjoin(_succ, _succ.c.id == rt.c.replaced_by)
        .outerjoin(u, u.c.id == s.c.user_id)
    )
    .where(rt.c.token_hash == PRESENTED)
)

REVOKE_FOR_REUSE = (
    update(s)
    .where(s.c.id == SESSION_ID, s.c.revoked_at.is_(None))
    .values(revoked_at=NOW, revoke_reason="token_reuse")
    .returning(*s.c)
)
