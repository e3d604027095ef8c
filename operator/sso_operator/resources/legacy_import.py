"""The legacy-import Job (``spec.database.importFrom``) and the reading of its result.

Why this module exists: a team moving from the Go SSO service names its old
SQLite file in the SSOInstance, and the operator must run ``sso import
legacy-sqlite`` once, after the schema is migrated and before the service
first starts, with the same database URL and data key the service uses (the
imported app secrets are sealed with that key). This module builds that Job
and turns what its pod reported into ``status.import``; both are pure, so the
manifest is golden-file tested and the parsing is fed the command's real output.

The result travels like the backup results: the command's one JSON line
(format ``sso.legacy-import/v1``, docs/migrating-from-go-sso.md) goes to stdout
in full and, shortened to fit the kubelet's 4096-byte limit (counts kept, list
entries cut, ``detail`` dropped), to ``/dev/termination-log``. Without a kubelet
(kwok) a Job completes with no message: the completion is recorded with the
note :data:`NO_RESULT`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sso_operator import names
from sso_operator.resources import config
from sso_operator.resources.common import (
    SERVICE_UID,
    Owner,
    container_security_context,
    labels,
    metadata,
    pod_security_context,
)
from sso_operator.spec import ImportFrom, SSOInstanceSpec

#: ``app.kubernetes.io/component`` of the import Job's pods (the database NetworkPolicy admits it).
COMPONENT_IMPORT = "import"
FORMAT = "sso.legacy-import/v1"
SOURCE_ANNOTATION = "sso.dev/import-source"
IMPORT_DIR = "/import"
BACKOFF_LIMIT = 1
DEADLINE_S = 1800
#: List entries (skipped rows, conflicts, updated rows) kept in ``status.import``.
STATUS_LIST_LIMIT = 20
#: The kubelet keeps at most 4096 bytes of a termination message; stay below.
MESSAGE_LIMIT = 4000
NO_RESULT = "the Job completed but its pod reported no result (no kubelet ran it, e.g. kwok)"
RESULT_FILE = f"{config.TMP_DIR}/import-result.json"

#: Runs the import ($1: the file), prints its JSON line, writes a short copy to the
#: termination log, and exits with the command's status (no pipe: no pipefail needed).
SCRIPT = (
    f'sso import legacy-sqlite "$1" --json > {RESULT_FILE}; rc=$?; '
    f"cat {RESULT_FILE}; "
    'python -c "$2" || true; '
    'exit "$rc"'
)
#: Writes the shortened JSON line to /dev/termination-log (nothing if there is none:
#: FallbackToLogsOnError then reports the log tail).
SHORTEN = f"""import json
lines = open({RESULT_FILE!r}).read().strip().splitlines()
doc = json.loads(lines[-1]) if lines else None
if isinstance(doc, dict):
    if isinstance(doc.get("error"), str):
        doc["error"] = doc["error"][:1000]
    for n in ({STATUS_LIST_LIMIT}, 10, 5, 0):
        for k in ("skipped", "conflicts", "updated"):
            if isinstance(doc.get(k), list):
                if len(doc[k]) > n:
                    doc["truncated"] = True
                doc[k] = [{{f: e.get(f) for f in ("table", "id", "reason")}} for e in doc[k][:n]]
        out = json.dumps(doc, separators=(",", ":"))
        if len(out) <= {MESSAGE_LIMIT}:
            break
    open("/dev/termination-log", "w").write(out)
"""


def source_hash(import_from: ImportFrom) -> str:
    """Identity of an ``importFrom`` stanza: a change of it runs the import again."""
    canonical = json.dumps(
        import_from.model_dump(by_alias=True, exclude_none=True),
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def describe_source(import_from: ImportFrom) -> str:
    """Human name of the source, for events and status."""
    pvc = import_from.persistent_volume_claim
    if pvc is not None:
        return f"PersistentVolumeClaim {pvc.claim_name}, {pvc.path}"
    secret = import_from.secret
    assert secret is not None
    return f"Secret {secret.name}, key {secret.key}"


def file_path(import_from: ImportFrom) -> str:
    """Where the old database file is inside the Job's container."""
    pvc = import_from.persistent_volume_claim
    if pvc is not None:
        return f"{IMPORT_DIR}/{pvc.path}"
    assert import_from.secret is not None
    return f"{IMPORT_DIR}/{import_from.secret.key}"


def _source_volume(import_from: ImportFrom) -> dict[str, Any]:
    pvc = import_from.persistent_volume_claim
    if pvc is not None:
        # The whole claim, read-only: SQLite also reads a -wal file lying beside the database.
        return {
            "name": "legacy",
            "persistentVolumeClaim": {"claimName": pvc.claim_name, "readOnly": True},
        }
    secret = import_from.secret
    assert secret is not None
    return {
        "name": "legacy",
        "secret": {
            "secretName": secret.name,
            "items": [{"key": secret.key, "path": secret.key}],
            "defaultMode": 0o440,
        },
    }


def job(spec: SSOInstanceSpec, owner: Owner) -> dict[str, Any]:
    """The Job that imports ``spec.database.importFrom`` (which must be set)."""
    import_from = spec.database.import_from
    if import_from is None:
        raise ValueError("spec.database.importFrom is not set")
    source = source_hash(import_from)
    name = names.legacy_import_job(owner.name, source)
    wanted = {"SSO_DATABASE__URL", "SSO_DATA_KEY"}  # the very entries the Deployment gets
    env = [e for e in config.secret_environment(spec, owner) if e["name"] in wanted]
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(SERVICE_UID),
        "containers": [
            {
                "name": "import",
                "image": spec.image,
                "imagePullPolicy": spec.image_pull_policy,
                "command": ["/bin/sh", "-c", SCRIPT, "sso-import", file_path(import_from), SHORTEN],
                "envFrom": [{"configMapRef": {"name": names.config_map(owner.name)}}],
                "env": [*env, {"name": "HOME", "value": config.TMP_DIR}],
                "securityContext": container_security_context(SERVICE_UID),
                "terminationMessagePolicy": "FallbackToLogsOnError",
                "volumeMounts": [
                    {"name": "legacy", "mountPath": IMPORT_DIR, "readOnly": True},
                    {"name": "tmp", "mountPath": config.TMP_DIR},
                ],
            }
        ],
        "volumes": [_source_volume(import_from), {"name": "tmp", "emptyDir": {}}],
    }
    if spec.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": ref.name} for ref in spec.image_pull_secrets]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(
            owner, name, COMPONENT_IMPORT, annotations={SOURCE_ANNOTATION: source}
        ),
        "spec": {
            "backoffLimit": BACKOFF_LIMIT,
            "activeDeadlineSeconds": DEADLINE_S,
            "template": {
                "metadata": {"labels": labels(owner, COMPONENT_IMPORT)},
                "spec": pod,
            },
        },
    }


# ------------------------------------------------------------------ the result


@dataclass(frozen=True)
class ImportReport:
    """What the import's pod said: its ``sso.legacy-import/v1`` document, or the raw text."""

    document: Mapping[str, Any] | None
    text: str

    @property
    def ok(self) -> bool | None:
        """True/False as the document says; None when there is no document."""
        if self.document is None:
            return None
        return bool(self.document.get("ok"))


def parse_message(message: str | None) -> ImportReport:
    """The last ``sso.legacy-import/v1`` JSON line of a termination message (or of a log)."""
    text = (message or "").strip()
    for line in reversed(text.splitlines()):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            parsed = json.loads(line)
        except ValueError:
            continue
        if isinstance(parsed, dict) and parsed.get("format") == FORMAT:
            return ImportReport(parsed, text)
    return ImportReport(None, text)


_COUNT_KEYS = ("read", "imported", "unchanged", "updated", "conflicts", "skipped")


def _counts(raw: Any) -> dict[str, int]:
    table = raw if isinstance(raw, Mapping) else {}
    return {key: int(table.get(key) or 0) for key in _COUNT_KEYS}


def _entries(raw: Any) -> list[dict[str, Any]]:
    items = raw if isinstance(raw, list) else []
    return [
        {
            "table": str(e.get("table", "")),
            "id": int(e.get("id") or 0),
            "reason": str(e.get("reason", "")),
        }
        for e in items[:STATUS_LIST_LIMIT]
        if isinstance(e, Mapping)
    ]


def result_fields(report: ImportReport) -> dict[str, Any]:
    """The part of ``status.import`` that comes from the pod's report."""
    doc = report.document
    if doc is None:
        return {"message": NO_RESULT if not report.text else report.text[-1000:]}
    fields: dict[str, Any] = {"users": _counts(doc.get("users")), "apps": _counts(doc.get("apps"))}
    skipped, conflicts = _entries(doc.get("skipped")), _entries(doc.get("conflicts"))
    fields["skipped"] = skipped
    fields["conflicts"] = conflicts
    fields["truncated"] = bool(doc.get("truncated")) or any(
        len(doc.get(k) or []) > STATUS_LIST_LIMIT for k in ("skipped", "conflicts")
    )
    if doc.get("ok") is False:
        fields["message"] = str(doc.get("error", ""))[:1000]
    else:
        fields["message"] = summary(fields)
    return fields


def summary(fields: Mapping[str, Any]) -> str:
    """One line of counts, for the status message and the Event."""
    parts = []
    for table in ("users", "apps"):
        c = fields.get(table)
        if not isinstance(c, Mapping):
            continue
        parts.append(
            f"{table}: {c['imported']} imported, {c['unchanged']} unchanged,"
            f" {c['updated']} updated, {c['conflicts']} conflicts, {c['skipped']} skipped"
        )
    return "; ".join(parts) if parts else NO_RESULT
