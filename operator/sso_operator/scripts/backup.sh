#!/bin/bash
# backup.sh: one logical backup of an SSO database, then the retention policy.
#
# Why this script exists: the backup CronJob of an SSOInstance runs it in the
# PostgreSQL image (pg_dump, psql, GNU coreutils). It dumps the database with
# `pg_dump -Fc` into $BACKUP_DIR, atomically (a hidden .partial file renamed
# once complete and readable by pg_restore), writes a metadata file next to it
# (schema version, row counts and the newest timestamp, read *before* the dump
# so the dump is at least that fresh; the restore test checks against it),
# then deletes what the retention policy does not keep. Its result is one JSON
# line on stdout and in $TERMINATION_LOG, which the operator reads from the
# pod status. Credentials come from the environment (libpq's PG* variables or
# DATABASE_URL), never from this text.
#
# Usage: backup.sh            dump, then apply retention
#        backup.sh retention  apply retention only
#
# Environment:
#   BACKUP_DIR       where dumps live (default /backups)
#   RETAIN_DAYS      keep the newest dump of each of the last N days (default 7)
#   RETAIN_WEEKS     keep the newest dump of each of the last M ISO weeks (default 4)
#   DATABASE_URL     optional DSN (postgresql:// or postgresql+asyncpg://); else PGHOST,
#                    PGPORT, PGUSER, PGPASSWORD, PGDATABASE
#   TERMINATION_LOG  default /dev/termination-log
#   BACKUP_NOW       override the timestamp (YYYYmmddTHHMMSSZ), for tests
#
# Retention counts calendar days and ISO weeks back from the newest dump (not
# from today), so a run of failed backups never makes it delete older ones.

set -euo pipefail
umask 077

BACKUP_DIR="${BACKUP_DIR:-/backups}"
RETAIN_DAYS="${RETAIN_DAYS:-7}"
RETAIN_WEEKS="${RETAIN_WEEKS:-4}"
TERMINATION_LOG="${TERMINATION_LOG:-/dev/termination-log}"
PREFIX="sso-"
STEP="start"

json_escape() {
    local s="$1"
    s="${s//\\/\\\\}"
    s="${s//\"/\\\"}"
    s="${s//$'\n'/ }"
    s="${s//$'\r'/ }"
    s="${s//$'\t'/ }"
    printf '%s' "$s"
}

report() {
    # One JSON line: stdout (kubectl logs) and the termination message (operator).
    printf '%s\n' "$1"
    if [ -n "$TERMINATION_LOG" ]; then
        printf '%s\n' "$1" >"$TERMINATION_LOG" 2>/dev/null || true
    fi
}

fail() {
    local message="$1"
    report "{\"kind\":\"backup\",\"result\":\"Failed\",\"step\":\"$(json_escape "$STEP")\",\"message\":\"$(json_escape "$message")\"}"
    exit 1
}

on_error() {
    local status=$?
    local detail=""
    if [ -s "${ERR_FILE:-}" ]; then
        detail=": $(tail -c 600 "$ERR_FILE")"
    fi
    rm -f "${PARTIAL:-}" "${META_PARTIAL:-}"
    fail "step ${STEP} failed with exit status ${status}${detail}"
}

libpq_url() {
    # The service's asyncpg URL spelled for libpq: drop +asyncpg, ssl= becomes sslmode=.
    local url="${DATABASE_URL#postgresql+asyncpg://}"
    if [ "$url" != "$DATABASE_URL" ]; then
        url="postgresql://$url"
    fi
    printf '%s' "$url" | sed -E 's/([?&])ssl=/\1sslmode=/'
}

psql_value() {
    if [ -n "${DATABASE_URL:-}" ]; then
        psql "$(libpq_url)" -X -A -t -v ON_ERROR_STOP=1 -c "$1" 2>>"$ERR_FILE"
    else
        psql -X -A -t -v ON_ERROR_STOP=1 -c "$1" 2>>"$ERR_FILE"
    fi
}

day_number() {
    # Days since 1970-01-01 of a YYYYMMDD date.
    echo $(( $(date -u -d "$1" +%s) / 86400 ))
}

apply_retention() {
    STEP="retention"
    local files=() name stamp day newest_day="" newest_monday="" dow monday
    local -A kept_days=() kept_weeks=()
    local kept=0 deleted=0
    # Names sort by time; newest first.
    mapfile -t files < <(find "$BACKUP_DIR" -maxdepth 1 -type f -name "${PREFIX}*.dump" -printf '%f\n' | sort -r)
    for name in "${files[@]}"; do
        stamp="${name#"$PREFIX"}"
        stamp="${stamp%.dump}"
        if ! [[ "$stamp" =~ ^[0-9]{8}T[0-9]{6}Z$ ]]; then
            continue  # not ours: never delete what we did not write
        fi
        day=$(day_number "${stamp:0:8}")
        dow=$(date -u -d "${stamp:0:8}" +%u)
        monday=$(( day - dow + 1 ))
        if [ -z "$newest_day" ]; then
            newest_day=$day
            newest_monday=$monday
        fi
        local keep=0
        if (( newest_day - day < RETAIN_DAYS )) && [ -z "${kept_days[$day]:-}" ]; then
            kept_days[$day]=1
            keep=1
        fi
        if (( (newest_monday - monday) / 7 < RETAIN_WEEKS )) && [ -z "${kept_weeks[$monday]:-}" ]; then
            kept_weeks[$monday]=1
            keep=1
        fi
        if (( keep )); then
            kept=$(( kept + 1 ))
        else
            rm -f "$BACKUP_DIR/$name" "$BACKUP_DIR/${name%.dump}.json"
            deleted=$(( deleted + 1 ))
        fi
    done
    RETENTION_KEPT=$kept
    RETENTION_DELETED=$deleted
}

main() {
    ERR_FILE="$(mktemp)"
    trap on_error ERR
    trap 'rm -f "$ERR_FILE"' EXIT
    STEP="prepare"
    [ -d "$BACKUP_DIR" ] || fail "backup directory $BACKUP_DIR does not exist (is the volume mounted?)"
    [ -w "$BACKUP_DIR" ] || fail "backup directory $BACKUP_DIR is not writable"
    if [ "${1:-}" = "retention" ]; then
        apply_retention
        report "{\"kind\":\"retention\",\"result\":\"Succeeded\",\"kept\":${RETENTION_KEPT},\"deleted\":${RETENTION_DELETED}}"
        return 0
    fi
    # Leftovers of a run that died mid-way are never counted as backups.
    find "$BACKUP_DIR" -maxdepth 1 -name ".${PREFIX}*.partial" -delete

    local stamp="${BACKUP_NOW:-$(date -u +%Y%m%dT%H%M%SZ)}"
    local started="$EPOCHREALTIME"
    local base="${PREFIX}${stamp}"
    local file="$BACKUP_DIR/$base.dump"
    PARTIAL="$BACKUP_DIR/.$base.dump.partial"
    META_PARTIAL="$BACKUP_DIR/.$base.json.partial"

    STEP="inspect"
    local version users apps sessions newest
    version=$(psql_value "SELECT version_num FROM alembic_version")
    users=$(psql_value "SELECT count(*) FROM users")
    apps=$(psql_value "SELECT count(*) FROM apps")
    sessions=$(psql_value "SELECT count(*) FROM sessions")
    newest=$(psql_value "SELECT coalesce(to_char(greatest((SELECT max(updated_at) FROM users), (SELECT max(ts) FROM audit_events)) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), '')")

    STEP="dump"
    if [ -n "${DATABASE_URL:-}" ]; then
        pg_dump -Fc --dbname="$(libpq_url)" -f "$PARTIAL" 2>>"$ERR_FILE"
    else
        pg_dump -Fc -f "$PARTIAL" 2>>"$ERR_FILE"
    fi
    STEP="verify"
    pg_restore --list "$PARTIAL" >/dev/null 2>>"$ERR_FILE"
    local size sha
    size=$(stat -c %s "$PARTIAL")
    sha=$(sha256sum "$PARTIAL" | cut -d' ' -f1)
    sync "$PARTIAL" 2>/dev/null || true
    mv "$PARTIAL" "$file"

    STEP="metadata"
    local finished
    finished=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    local duration
    duration=$(awk -v a="$started" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f", b - a }')
    printf '{\n "file": "%s",\n "finished_at": "%s",\n "size_bytes": %s,\n "sha256": "%s",\n "schema_version": "%s",\n "newest_timestamp": "%s",\n "rows_users": %s,\n "rows_apps": %s,\n "rows_sessions": %s\n}\n' \
        "$base.dump" "$finished" "$size" "$sha" "$(json_escape "$version")" "$newest" \
        "$users" "$apps" "$sessions" >"$META_PARTIAL"
    mv "$META_PARTIAL" "$BACKUP_DIR/$base.json"

    apply_retention
    report "{\"kind\":\"backup\",\"result\":\"Succeeded\",\"file\":\"$base.dump\",\"sizeBytes\":$size,\"sha256\":\"$sha\",\"finishedAt\":\"$finished\",\"durationSeconds\":$duration,\"schemaVersion\":\"$(json_escape "$version")\",\"kept\":$RETENTION_KEPT,\"deleted\":$RETENTION_DELETED}"
}

main "$@"
