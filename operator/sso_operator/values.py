"""Value types of the custom resources' specs: durations, cron schedules, CIDRs, quantities.

Also the core/v1 shapes the specs embed (resources, tolerations, …).

Why this module exists: the CRD schemas check these values' shape with
patterns; the operator needs them parsed (a duration as a timedelta) and
checked further where a pattern cannot (a cron field's range). Each type here
is an ``Annotated`` pydantic type used by the models in :mod:`sso_operator.spec`,
with the same pattern and bounds as the schema.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import timedelta
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel

_DURATION_RE = re.compile(r"^([0-9]+(ms|s|m|h))+$")
_DURATION_PART_RE = re.compile(r"([0-9]+)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_QUANTITY_RE = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$"
_CRON_MACROS = frozenset(
    {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
)
_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
# (name, lowest, highest, names for the values starting at `lowest`)
_CRON_FIELDS: tuple[tuple[str, int, int, list[str]], ...] = (
    ("minute", 0, 59, []),
    ("hour", 0, 23, []),
    ("day-of-month", 1, 31, []),
    ("month", 1, 12, _MONTHS),
    ("day-of-week", 0, 7, _DAYS),
)


def parse_duration(value: object) -> timedelta:
    """Parse a Go-style duration limited to the CRD's units: ``5m``, ``1h30m``, ``250ms``."""
    if isinstance(value, timedelta):
        return value
    if not isinstance(value, str) or not _DURATION_RE.fullmatch(value):
        raise ValueError(f"{value!r} is not a duration such as 5m, 1h30m or 720h")
    seconds = sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART_RE.findall(value))
    return timedelta(seconds=seconds)


def _cron_value(token: str, low: int, high: int, names: list[str], field: str) -> int:
    if token.lower() in names:
        return names.index(token.lower()) + low
    if not token.isdigit():
        raise ValueError(f"{field} field: {token!r} is not a number")
    number = int(token)
    if not low <= number <= high:
        raise ValueError(f"{field} field: {number} is out of range {low}-{high}")
    return number


def validate_cron(schedule: str) -> str:
    """Check a cron schedule the way Kubernetes CronJobs read it (5 fields or a macro)."""
    if schedule in _CRON_MACROS:
        return schedule
    fields = schedule.split()
    if len(fields) != len(_CRON_FIELDS):
        raise ValueError(f"{schedule!r} must have 5 fields or be a macro such as @daily")
    for text, (field, low, high, names) in zip(fields, _CRON_FIELDS, strict=True):
        for item in text.split(","):
            base, _, step = item.partition("/")
            if step and (not step.isdigit() or int(step) < 1):
                raise ValueError(f"{field} field: step {step!r} must be a positive number")
            if base in ("*", "?"):
                if base == "?" and field not in ("day-of-month", "day-of-week"):
                    raise ValueError(f"{field} field: '?' is only allowed for days")
                continue
            first, _, last = base.partition("-")
            start = _cron_value(first, low, high, names, field)
            if last and _cron_value(last, low, high, names, field) < start:
                raise ValueError(f"{field} field: range {base!r} runs backwards")
    return schedule


def _validate_cidr(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"{value!r} is not a CIDR such as 10.0.0.0/8") from None
    if "/" not in value:
        raise ValueError(f"{value!r} is not a CIDR such as 10.0.0.0/8 (no prefix length)")
    return value


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
CronSchedule = Annotated[str, Field(max_length=128), AfterValidator(validate_cron)]
Quantity = Annotated[str, Field(pattern=_QUANTITY_RE, max_length=32)]
Cidr = Annotated[str, Field(max_length=64), AfterValidator(_validate_cidr)]
IntOrString = int | str
ResourceList = dict[str, IntOrString]
ImageRef = Annotated[str, Field(min_length=1, max_length=512, pattern=r"^[^\s]+$")]
SecretName = Annotated[str, Field(min_length=1, max_length=253)]
SecretKey = Annotated[str, Field(max_length=253)]


class Model(BaseModel):
    """Base of the spec models: camelCase aliases, unknown fields rejected, immutable."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class Passthrough(BaseModel):
    """A core/v1 structure the CRD passes through unchanged (preserve-unknown-fields)."""

    model_config = ConfigDict(extra="allow", frozen=True)


# ------------------------------------------------ core/v1 shapes used in specs


class LocalObjectReference(Model):
    name: SecretName


class Resources(Model):
    limits: ResourceList = Field(default_factory=dict, max_length=16)
    requests: ResourceList = Field(default_factory=dict, max_length=16)


class Toleration(Model):
    key: str | None = Field(None, max_length=317)
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = Field(None, max_length=63)
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


class TopologySpreadConstraint(Model):
    max_skew: int = Field(ge=1)
    topology_key: str = Field(min_length=1, max_length=317)
    when_unsatisfiable: Literal["DoNotSchedule", "ScheduleAnyway"]
    min_domains: int | None = Field(None, ge=1)
    label_selector: Passthrough | None = None
    match_label_keys: list[str] = Field(default_factory=list, max_length=16)
    node_affinity_policy: Literal["Honor", "Ignore"] | None = None
    node_taints_policy: Literal["Honor", "Ignore"] | None = None


class IpBlock(Model):
    cidr: Cidr
    except_: list[Cidr] = Field(default_factory=list, max_length=32, alias="except")


class NetworkPolicyPeer(Model):
    namespace_selector: Passthrough | None = None
    pod_selector: Passthrough | None = None
    ip_block: IpBlock | None = None
