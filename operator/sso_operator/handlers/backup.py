"""kopf handlers of an SSOInstance's backups and restore tests.

Why this module exists: the backup and restore-test CronJobs (built in
:mod:`sso_operator.resources.backup`) run on their own; someone has to put
them in place, notice what they did and say so in ``status.backup`` and the
``BackupReady`` condition. Results travel through the pods' termination
messages: each script writes one JSON line to ``/dev/termination-log``, the
kubelet copies it into ``status.containerStatuses[].state.terminated.message``,
and the timer here reads the newest finished Job of each CronJob and its pod.
In a cluster without real kubelets (kwok) Jobs complete with no message: the
completion is recorded with ``size: unknown`` and a message that says why.

``BackupReady`` is True while backups work (also before the first scheduled
run), False when the newest backup or restore test failed or when no backup
succeeded for longer than ``spec.restoreTest.maxBackupAge`` (the RPO).

Writes ``status.backup`` and the ``BackupReady`` condition only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import kopf

from sso_operator import conditions, kube, names
from sso_operator.conditions import Condition
from sso_operator.handlers.timer_status import write_status
from sso_operator.keys import format_ts
from sso_operator.resources import backup
from sso_operator.resources.common import (
    COMPONENT_BACKUP,
    Owner,
    selector,
    termination_message,
)
from sso_operator.spec import GROUP, VERSION, InvalidSpecError, SSOInstanceSpec, parse_instance_spec

PLURAL = "ssoinstances"
POLL_INTERVAL_S = 15.0
SUCCEEDED = "Succeeded"
FAILED = "Failed"
NO_MESSAGE = "the Job completed but its pod reported no result (no kubelet ran it, e.g. kwok)"


def _ts(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class JobReport:
    """A finished Job of one of the two CronJobs, with what its pod said."""

    job: str
    result: str  # Succeeded or Failed
    finished: datetime
    started: datetime | None
    report: Mapping[str, Any] | None  # the script's JSON line
    text: str  # the raw message when it was not JSON (FallbackToLogsOnError: the log tail)


def parse_message(message: str | None) -> tuple[Mapping[str, Any] | None, str]:
    """The script's JSON line from a termination message, or None and the text as it is."""
    text = (message or "").strip()
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            try:
                parsed = json.loads(line)
            except ValueError:
                continue
            if isinstance(parsed, dict):
                return parsed, text
    return None, text


def job_report(job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> JobReport | None:
    """Interpret a Job and its pods; None while it is still running."""
    status = job.get("status") or {}
    result = finished = None
    for condition in status.get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Complete":
            result, finished = SUCCEEDED, status.get("completionTime")
        elif condition.get("type") == "Failed":
            result, finished = FAILED, condition.get("lastTransitionTime")
    if result is None:
        return None
    report, text = parse_message(termination_message(pods))
    when = _ts(finished) or _ts(status.get("startTime")) or datetime.now(UTC)
    return JobReport(
        job["metadata"]["name"], result, when, _ts(status.get("startTime")), report, text
    )


def newest(reports: Sequence[JobReport], result: str | None = None) -> JobReport | None:
    matching = [r for r in reports if result is None or r.result == result]
    return max(matching, key=lambda r: (r.finished, r.job), default=None)


def _failure_text(report: JobReport) -> str:
    if report.report is not None:
        step = report.report.get("step")
        message = str(report.report.get("message", ""))
        return f"{step}: {message}" if step else message
    return report.text[-500:] or "the Job failed and its pod reported nothing"


def backup_status(
    current: Mapping[str, Any],
    backups: Sequence[JobReport],
    restore_tests: Sequence[JobReport],
) -> dict[str, Any]:
    """``status.backup`` from the visible Jobs, carrying what older (deleted) Jobs told."""
    document = dict(current)
    last = newest(backups)
    if last is not None and last.finished >= (_ts(current.get("lastBackupTime")) or last.finished):
        document.update(
            lastBackupJob=last.job,
            lastBackupResult=last.result,
            lastBackupTime=format_ts(last.finished),
            lastBackupMessage=(
                _failure_text(last)
                if last.result == FAILED
                else ("reported by the backup pod" if last.report else NO_MESSAGE)
            ),
        )
    success = newest(backups, SUCCEEDED)
    recorded = _ts(current.get("lastSuccessfulBackupTime"))
    # A kubelet report that arrives after the Job was first recorded still counts.
    late_report = (
        success is not None
        and success.report is not None
        and current.get("lastBackupSize") == "unknown"
        and current.get("lastBackupJob") == success.job
    )
    if success is not None and (recorded is None or success.finished > recorded or late_report):
        report = success.report or {}
        size = report.get("sizeBytes")
        when = _ts(report.get("finishedAt")) or success.finished
        document.update(
            lastSuccessfulBackupTime=format_ts(when),
            lastBackupSize=human_size(size) if isinstance(size, int) else "unknown",
            lastBackupSizeBytes=size if isinstance(size, int) else None,
            lastBackupFile=report.get("file"),
        )
    test = newest(restore_tests)
    if test is not None:
        report = test.report or {}
        duration = report.get("durationSeconds")
        if not isinstance(duration, int | float) and test.started is not None:
            duration = (test.finished - test.started).total_seconds()
        document["lastRestoreTest"] = {
            key: value
            for key, value in {
                "time": format_ts(test.finished),
                "result": test.result,
                "job": test.job,
                "durationSeconds": duration,
                "backupFile": report.get("backup"),
                "schemaVersion": report.get("schemaVersion"),
                "step": report.get("step") if test.result == FAILED else None,
                "message": _failure_text(test)
                if test.result == FAILED
                else (None if test.report else NO_MESSAGE),
            }.items()
            if value is not None
        }
        document["lastRestoreTestTime"] = format_ts(test.finished)
        document["lastRestoreTestResult"] = test.result
    return {key: value for key, value in document.items() if value is not None}


def backup_condition(
    spec: SSOInstanceSpec,
    status: Mapping[str, Any],
    *,
    cronjob_created: datetime | None,
    now: datetime,
) -> Condition:
    """``BackupReady``: see the module docstring."""
    if not spec.backup.enabled:
        return Condition(conditions.BACKUP_READY, "True", "Disabled", "Backups are disabled")
    if cronjob_created is None:
        return Condition(
            conditions.BACKUP_READY, "False", "Provisioning", "Backup CronJob not created yet"
        )
    if status.get("lastBackupResult") == FAILED:
        message = (
            f"backup Job {status.get('lastBackupJob')} failed: {status.get('lastBackupMessage')}"
        )
        return Condition(conditions.BACKUP_READY, "False", "BackupFailed", message)
    test = status.get("lastRestoreTest") or {}
    if spec.restore_test.enabled and test.get("result") == FAILED:
        message = f"restore test Job {test.get('job')} failed: {test.get('message')}"
        return Condition(conditions.BACKUP_READY, "False", "RestoreTestFailed", message)
    success = _ts(status.get("lastSuccessfulBackupTime"))
    rpo = spec.restore_test.max_backup_age
    since = success or cronjob_created
    if now - since > rpo:
        what = (
            f"the last successful backup was at {format_ts(success)}"
            if success
            else (
                f"no backup succeeded since the CronJob was created at {format_ts(cronjob_created)}"
            )
        )
        message = f"{what}, longer ago than maxBackupAge ({rpo}); check the CronJob's Jobs"
        return Condition(conditions.BACKUP_READY, "False", "BackupOverdue", message)
    if success is None:
        message = f"no backup has run yet; schedule {spec.backup.schedule!r} (UTC)"
        return Condition(conditions.BACKUP_READY, "True", "Scheduled", message)
    message = (
        f"last backup {status.get('lastBackupFile') or '(file unknown)'} at "
        f"{format_ts(success)}, size {status.get('lastBackupSize', 'unknown')}"
    )
    return Condition(conditions.BACKUP_READY, "True", "BackupSucceeded", message)


# ------------------------------------------------------------------ API side


async def apply_objects(spec: SSOInstanceSpec, owner: Owner) -> None:
    """Put the backup objects in place; remove the CronJobs the spec no longer wants.

    The PVC is only ever created (its size and class cannot be changed in
    place) and never deleted: backups outlive the instance.
    """
    for manifest in backup.manifests(spec, owner):
        if manifest["kind"] == "PersistentVolumeClaim":
            meta = manifest["metadata"]
            if await kube.get("v1", "PersistentVolumeClaim", meta["namespace"], meta["name"]):
                continue
            await kube.create(manifest)
            continue
        await kube.apply(manifest)
    if not spec.backup.enabled:
        await kube.delete("batch/v1", "CronJob", owner.namespace, names.backup_cronjob(owner.name))
    if not (spec.backup.enabled and spec.restore_test.enabled):
        name = names.restore_test_cronjob(owner.name)
        await kube.delete("batch/v1", "CronJob", owner.namespace, name)


async def reports(owner: Owner, component: str) -> list[JobReport]:
    """The finished Jobs of one CronJob, interpreted: two list requests, whatever their number.

    Jobs and their pods carry the CronJob template's labels; pods name their Job
    in ``batch.kubernetes.io/job-name``.
    """
    labels = selector(owner, component)
    jobs = await kube.list_objects("batch/v1", "Job", owner.namespace, labels)
    if not jobs:
        return []
    pods: dict[str, list[dict[str, Any]]] = {}
    for pod in await kube.list_objects("v1", "Pod", owner.namespace, labels):
        job_name = (pod["metadata"].get("labels") or {}).get("batch.kubernetes.io/job-name", "")
        pods.setdefault(job_name, []).append(pod)
    found = []
    for job in jobs:
        report = job_report(job, pods.get(job["metadata"]["name"], []))
        if report is not None:
            found.append(report)
    return found


async def observe(
    body: Mapping[str, Any], spec: SSOInstanceSpec, now: datetime | None = None
) -> tuple[dict[str, Any], Condition, list[tuple[str, JobReport]]]:
    """Read the Jobs; return ``status.backup``, ``BackupReady`` and the reports that are news."""
    owner = Owner.from_body(body)
    current = (body.get("status") or {}).get("backup") or {}
    cronjob = await kube.get(
        "batch/v1", "CronJob", owner.namespace, names.backup_cronjob(owner.name)
    )
    if spec.backup.enabled and cronjob is None:
        await apply_objects(spec, owner)  # deleted by someone: put it back
    created = _ts((cronjob or {}).get("metadata", {}).get("creationTimestamp"))
    backups = await reports(owner, COMPONENT_BACKUP)
    tests = await reports(owner, backup.COMPONENT_RESTORE_TEST)
    status = backup_status(current, backups, tests)
    when = now or datetime.now(UTC)
    condition = backup_condition(spec, status, cronjob_created=created, now=when)
    seen = (current.get("lastBackupJob"), (current.get("lastRestoreTest") or {}).get("job"))
    news = [
        (kind, report)
        for kind, report in (("Backup", newest(backups)), ("RestoreTest", newest(tests)))
        if report is not None and report.job not in seen
    ]
    return status, condition, news


def announce(body: kopf.Body, news: Sequence[tuple[str, JobReport]]) -> None:
    """One Event per newly finished Job: ``BackupSucceeded``, ``RestoreTestFailed``, …"""
    for kind, report in news:
        if report.result == SUCCEEDED:
            kopf.info(body, reason=f"{kind}Succeeded", message=f"Job {report.job} succeeded")
        else:
            message = f"Job {report.job}: {_failure_text(report)}"
            kopf.warn(body, reason=f"{kind}Failed", message=message)


async def run(body: kopf.Body, *, apply: bool) -> None:
    try:
        spec = parse_instance_spec(body.get("spec") or {})
    except InvalidSpecError:
        return  # the main handler records the invalid spec
    if apply:
        await apply_objects(spec, Owner.from_body(body))
    status, condition, news = await observe(body, spec)
    await write_status(body, "backup", status, condition)
    announce(body, news)


@kopf.on.resume(GROUP, VERSION, PLURAL, id="backups")
@kopf.on.create(GROUP, VERSION, PLURAL, id="backups")
@kopf.on.update(GROUP, VERSION, PLURAL, id="backups")
async def apply(body: kopf.Body, **_: Any) -> None:
    """Create or update the backup volume, scripts and CronJobs."""
    await run(body, apply=True)


@kopf.timer(GROUP, VERSION, PLURAL, id="backup-results", interval=POLL_INTERVAL_S)
async def results(body: kopf.Body, **_: Any) -> None:
    """Record the newest backup and restore-test results."""
    await run(body, apply=False)
