"""Writes docs/configuration.md from `sso.config.Settings`, so the reference never drifts.

Each setting's environment variable, type, default and the comment above its
declaration in config.py. `--check` fails when the committed file is stale
(the test suite runs it).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr

from sso.config import Settings

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "docs" / "configuration.md"
SOURCE = ROOT / "service" / "sso" / "config.py"

HEADER = """# Configuration reference

Generated from `service/sso/config.py` by `python scripts/gen_config_docs.py`;
a test fails when this file is stale.

Every setting is an environment variable with the prefix `SSO_`; nested groups
use `__` (`SSO_DATABASE__URL`). Durations accept ISO 8601 (`PT5M`) or seconds.
Secret settings (marked *secret*) never print. They can also be files in the
directory named by `SSO_SECRETS_DIR` (how Kubernetes mounts Secrets): a file
named like the variable in lower case (`sso_data_key`); a nested group is one
file holding JSON (`sso_database` containing `{"url": "postgresql+asyncpg://…"}`).
Environment variables win over files. With no configuration at all the service runs
embedded: SQLite in `.sso/sso.db`, in-process denylist, generated dev keys in
`.sso/keys`, a generated data key in `.sso/data.key`.
"""


def comments() -> dict[tuple[str, str], str]:
    """(class, field) → the comment lines right above the field in config.py."""
    lines = SOURCE.read_text().splitlines()
    found: dict[tuple[str, str], str] = {}
    for node in ast.walk(ast.parse(SOURCE.read_text())):
        if isinstance(node, ast.ClassDef):
            for stmt in node.body:
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                    text: list[str] = []
                    i = stmt.lineno - 2
                    while i >= 0 and lines[i].strip().startswith("#"):
                        text.insert(0, lines[i].strip().lstrip("# "))
                        i -= 1
                    found[(node.name, stmt.target.id)] = " ".join(text)
    return found


def _default(value: Any) -> str:
    if isinstance(value, SecretStr):
        return f"`{value.get_secret_value()}` (*secret*)"
    if value is None:
        return "unset"
    if value == []:
        return "[]"
    return f"`{value}`"


def render() -> str:
    notes = comments()
    out = [HEADER]
    defaults = Settings.model_construct()
    groups: list[tuple[str, str, type[BaseModel], Any]] = [("", "General", Settings, defaults)]
    for name, field in Settings.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            groups.append((name, name.capitalize(), ann, getattr(defaults, name)))
    for prefix, title, model, instance in groups:
        out += [f"\n## {title}\n", "| variable | type | default | meaning |", "|---|---|---|---|"]
        for name, field in model.model_fields.items():
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                continue
            env = f"SSO_{prefix.upper()}__{name.upper()}" if prefix else f"SSO_{name.upper()}"
            type_name = getattr(ann, "__name__", str(ann)).replace("|", "\\|")
            value = getattr(instance, name) if instance is not None else field.default
            default = _default(value)
            if (model.__name__, name) == ("PasswordSettings", "workers"):
                default = "number of CPUs (min 2)"
            meaning = notes.get((model.__name__, name), "").replace("|", "\\|")
            out.append(f"| `{env}` | {type_name} | {default} | {meaning} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    text = render()
    if "--check" in sys.argv:
        if not TARGET.exists() or TARGET.read_text() != text:
            print("docs/configuration.md is stale: run `python scripts/gen_config_docs.py`")
            raise SystemExit(1)
        raise SystemExit(0)
    TARGET.parent.mkdir(exist_ok=True)
    TARGET.write_text(text)
