#!/bin/bash
# restore_test.sh: restore the newest backup into a scratch PostgreSQL and check it.
#
# Why this script exists: a backup nobody has restored is a hope, not a backup
# (checklist O2). The restore-test CronJob runs this in the PostgreSQL image.
# It needs no database server: it starts its own, inside the pod (initdb into
# $SCRATCH_DIR, an emptyDir; pg_ctl start listening on a unix socket only),
# restores the newest dump with pg_restore, and checks:
#   checksum   the dump's SHA-256 matches the one the backup recorded
#   restore    pg_restore --exit-on-error succeeds
#   schema     alembic_version has exactly one row, equal to the version the
#              backup recorded (and to $EXPECTED_SCHEMA_VERSION when set)
#   rows       users, apps and sessions can be counted (>= 0)
#   freshness  the backup is younger than $MAX_BACKUP_AGE_SECONDS (the RPO), and
#              its newest users.updated_at / audit_events.ts is not older than
#              the newest one the source had when the dump began
# The result, with the restore's duration (the RTO measured), is one JSON line
# on stdout and in $TERMINATION_LOG; the operator reads it from the pod status.
#
# Environment:
#   BACKUP_DIR               where the dumps are (default /backups, may be read-only)
#   SCRATCH_DIR              an empty writable directory (default /scratch)
#   MAX_BACKUP_AGE_SECONDS   RPO (default 93600 = 26 h)
#   EXPECTED_SCHEMA_VERSION  optional
#   TERMINATION_LOG          default /dev/termination-log
#   BACKUP_FILE              restore this file instead of the newest one

set -euo pipefail
umask 077

BACKUP_DIR="${BACKUP_DIR:-/backups}"
SCRATCH_DIR="${SCRATCH_DIR:-/scratch}"
MAX_BACKUP_AGE_SECONDS="${MAX_BACKUP_AGE_SECONDS:-93600}"
TERMINATION_LOG="${TERMINATION_LOG:-/dev/termination-log}"
STEP="start"
FILE=""
STARTED="$EPOCHREALTIME"
DATA=""

json_escape() {
    local s="$1"
    s="${s//\\/\\\\}"
    s="${s//\"/\\\"}"
    s="${s//$'\n'/ }"
    s="${s//$'\r'/ }"
    s="${s//$'\t'/ }"
    printf '%s' "$s"
}

elapsed() {
    awk -v a="$STARTED" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f", b - a }'
}

report() {
    printf '%s\n' "$1"
    if [ -n "$TERMINATION_LOG" ]; then
        printf '%s\n' "$1" >"$TERMINATION_LOG" 2>/dev/null || true
    fi
}

stop_server() {
    if [ -n "$DATA" ] && [ -f "$DATA/postmaster.pid" ]; then
        pg_ctl -D "$DATA" -m immediate -w stop >/dev/null 2>&1 || true
    fi
}

fail() {
    local message="$1"
    stop_server
    report "{\"kind\":\"restore-test\",\"result\":\"Failed\",\"step\":\"$(json_escape "$STEP")\",\"backup\":\"$(json_escape "$FILE")\",\"durationSeconds\":$(elapsed),\"message\":\"$(json_escape "$message")\"}"
    exit 1
}

on_error() {
    local status=$?
    local detail=""
    if [ -s "${ERR_FILE:-}" ]; then
        detail=": $(tail -c 600 "$ERR_FILE")"
    fi
    fail "step ${STEP} failed with exit status ${status}${detail}"
}

meta() {
    # A field of the metadata file backup.sh wrote (one "key": value per line).
    sed -n -E "s/^ *\"$1\": *\"?([^\",]*)\"?,?$/\1/p" "$META" | head -n 1
}

q() {
    psql -X -A -t -v ON_ERROR_STOP=1 -h "$SCRATCH_DIR" -p 5432 -U postgres -d restore -c "$1" 2>>"$ERR_FILE"
}

main() {
    ERR_FILE="$(mktemp)"
    trap on_error ERR
    trap 'stop_server; rm -f "$ERR_FILE"' EXIT

    STEP="find"
    if [ -n "${BACKUP_FILE:-}" ]; then
        FILE="$BACKUP_FILE"
    else
        # Only the names backup.sh writes (sso-YYYYmmddTHHMMSSZ.dump) sort by time.
        FILE=$(find "$BACKUP_DIR" -maxdepth 1 -type f -name 'sso-[0-9]*T[0-9]*Z.dump' -printf '%f\n' | sort -r | head -n 1)
    fi
    [ -n "$FILE" ] || fail "no backup found in $BACKUP_DIR"
    [ -f "$BACKUP_DIR/$FILE" ] || fail "backup $FILE does not exist in $BACKUP_DIR"
    META="$BACKUP_DIR/${FILE%.dump}.json"
    [ -f "$META" ] || fail "metadata ${FILE%.dump}.json of $FILE is missing"

    STEP="checksum"
    local expected actual
    expected=$(meta sha256)
    actual=$(sha256sum "$BACKUP_DIR/$FILE" | cut -d' ' -f1)
    [ "$expected" = "$actual" ] || fail "checksum mismatch: the backup recorded $expected, the file has $actual"

    STEP="initdb"
    DATA="$SCRATCH_DIR/data"
    rm -rf "$DATA"
    initdb -D "$DATA" -U postgres --auth=trust -E UTF8 --locale=C --no-sync >/dev/null 2>>"$ERR_FILE"
    STEP="start"
    pg_ctl -D "$DATA" -w -t 120 -l "$SCRATCH_DIR/postgres.log" \
        -o "-c listen_addresses='' -c unix_socket_directories='$SCRATCH_DIR' -c port=5432 -c fsync=off -c full_page_writes=off -c synchronous_commit=off" \
        start >/dev/null 2>>"$ERR_FILE"
    psql -X -q -h "$SCRATCH_DIR" -p 5432 -U postgres -d postgres -v ON_ERROR_STOP=1 \
        -c "CREATE DATABASE restore" 2>>"$ERR_FILE"

    STEP="restore"
    local restore_started="$EPOCHREALTIME"
    pg_restore --exit-on-error --no-owner --no-privileges -h "$SCRATCH_DIR" -p 5432 -U postgres \
        -d restore "$BACKUP_DIR/$FILE" 2>>"$ERR_FILE"
    local restore_seconds
    restore_seconds=$(awk -v a="$restore_started" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f", b - a }')

    STEP="schema"
    local versions version recorded
    versions=$(q "SELECT count(*) FROM alembic_version")
    [ "$versions" = "1" ] || fail "alembic_version has $versions rows, expected 1"
    version=$(q "SELECT version_num FROM alembic_version")
    recorded=$(meta schema_version)
    [ "$version" = "$recorded" ] || fail "schema version $version differs from $recorded recorded at backup time"
    if [ -n "${EXPECTED_SCHEMA_VERSION:-}" ] && [ "$version" != "$EXPECTED_SCHEMA_VERSION" ]; then
        fail "schema version $version, expected $EXPECTED_SCHEMA_VERSION"
    fi

    STEP="rows"
    local users apps sessions
    users=$(q "SELECT count(*) FROM users")
    apps=$(q "SELECT count(*) FROM apps")
    sessions=$(q "SELECT count(*) FROM sessions")
    for n in "$users" "$apps" "$sessions"; do
        [[ "$n" =~ ^[0-9]+$ ]] || fail "row count $n is not a non-negative number"
    done

    STEP="freshness"
    local finished age newest source_newest
    finished=$(meta finished_at)
    age=$(( $(date -u +%s) - $(date -u -d "$finished" +%s) ))
    (( age <= MAX_BACKUP_AGE_SECONDS )) || fail "the newest backup is ${age} s old, more than the RPO of ${MAX_BACKUP_AGE_SECONDS} s"
    newest=$(q "SELECT coalesce(to_char(greatest((SELECT max(updated_at) FROM users), (SELECT max(ts) FROM audit_events)) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), '')")
    source_newest=$(meta newest_timestamp)
    if [ -n "$source_newest" ]; then
        [ -n "$newest" ] || fail "the restore has no users or audit events, the source had data up to $source_newest"
        (( $(date -u -d "$newest" +%s) >= $(date -u -d "$source_newest" +%s) )) \
            || fail "the restore's newest row is from $newest, the source had $source_newest before the dump"
    fi

    STEP="done"
    stop_server
    report "{\"kind\":\"restore-test\",\"result\":\"Succeeded\",\"backup\":\"$(json_escape "$FILE")\",\"backupFinishedAt\":\"$finished\",\"backupAgeSeconds\":$age,\"durationSeconds\":$(elapsed),\"restoreSeconds\":$restore_seconds,\"schemaVersion\":\"$(json_escape "$version")\",\"rows\":{\"users\":$users,\"apps\":$apps,\"sessions\":$sessions},\"newestTimestamp\":\"$newest\"}"
}

main "$@"
