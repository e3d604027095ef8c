"""Dockerfile.service and Dockerfile.operator, checked without a container engine.

No Docker runs here, so the images cannot be built in tests. What can be
checked is what usually breaks: COPY sources that do not exist (or that
.dockerignore excludes), floating base-image tags, a root user, the wrong
extra installed, and an entry point that does not import. The wheel the build
stage would install is built from exactly the files the Dockerfile copies.
"""

from __future__ import annotations

import fnmatch
import importlib
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for key, args in self.instructions if key == keyword]


@dataclass(frozen=True)
class ImageSpec:
    dockerfile: str
    extra: str
    entrypoint: list[str]
    cmd: list[str] | None
    console_script: str
    module_check: str  # a module of the other package that must not be copied
    wheel_must_contain: tuple[str, ...]
    wheel_must_not_contain: str


IMAGES = [
    ImageSpec(
        dockerfile="Dockerfile.service",
        extra="service",
        entrypoint=["sso"],
        cmd=["serve"],
        console_script="sso",
        module_check="operator/",
        wheel_must_contain=("sso/cli/__init__.py",),
        wheel_must_not_contain="sso_operator/",
    ),
    ImageSpec(
        dockerfile="Dockerfile.operator",
        extra="operator",
        entrypoint=["sso-operator"],
        cmd=None,
        console_script="sso-operator",
        # The Admin API stubs (ClientApp) are the one part of service/ it needs.
        module_check="service/sso/",
        wheel_must_contain=("sso_operator/__main__.py", "sso_proto/sso/v1/admin_pb2.py"),
        wheel_must_not_contain="sso/cli/",
    ),
]


def parse(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """Global ARGs and the stages of a Dockerfile (continuations joined, comments dropped)."""
    lines: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in lines:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            match = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", rest, flags=re.IGNORECASE)
            assert match, f"cannot parse FROM {rest!r}"
            base = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m[1] or m[2]], match[1])
            stages.append(Stage(base=base, name=match[2]))
        else:
            assert stages, f"{keyword} before FROM in {path.name}"
            stages[-1].instructions.append((keyword, rest))
    return args, stages


def copy_sources(stage: Stage) -> list[str]:
    sources = []
    for args in stage.all("COPY"):
        if "--from=" in args:
            continue
        words = [w for w in args.split() if not w.startswith("--")]
        sources.extend(words[:-1])
    return sources


def dockerignore_patterns() -> list[str]:
    text = (REPO / ".dockerignore").read_text()
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def ignored(relative: str, patterns: list[str]) -> bool:
    relative = relative.rstrip("/")
    parts = relative.split("/")
    for pattern in patterns:
        if pattern.startswith("!"):
            continue
        plain = pattern.removeprefix("**/")
        for depth in range(1, len(parts) + 1):
            prefix = "/".join(parts[:depth])
            if fnmatch.fnmatch(prefix, pattern) or fnmatch.fnmatch(parts[depth - 1], plain):
                return True
    return False


@pytest.mark.parametrize("image", IMAGES, ids=lambda i: i.dockerfile)
def test_copy_sources_exist_and_are_not_ignored(image: ImageSpec) -> None:
    _, stages = parse(REPO / image.dockerfile)
    patterns = dockerignore_patterns()
    sources = [src for stage in stages for src in copy_sources(stage)]
    assert sources
    for source in sources:
        assert (REPO / source).exists(), f"{image.dockerfile}: COPY {source} does not exist"
        assert not ignored(source, patterns), f"{image.dockerfile}: .dockerignore drops {source}"
        assert not source.startswith(image.module_check), f"{image.dockerfile} copies {source}"


def test_dockerignore_keeps_local_state_out() -> None:
    patterns = dockerignore_patterns()
    for path in (".git", ".venv", ".cluster", ".sso", "tests", "service/sso/__pycache__"):
        assert ignored(path, patterns), path


@pytest.mark.parametrize("image", IMAGES, ids=lambda i: i.dockerfile)
def test_base_images_are_pinned(image: ImageSpec) -> None:
    _, stages = parse(REPO / image.dockerfile)
    names = {stage.name for stage in stages if stage.name}
    for stage in stages:
        if stage.base in names:
            continue
        repository, _, tag = stage.base.partition(":")
        assert repository == "python", stage.base
        assert re.fullmatch(r"3\.11\.\d+-slim(-\w+)?", tag), f"{stage.base} is not pinned"
    assert len(stages) >= 2, "multi-stage: build and runtime"


@pytest.mark.parametrize("image", IMAGES, ids=lambda i: i.dockerfile)
def test_runtime_runs_as_numeric_non_root_user(image: ImageSpec) -> None:
    _, stages = parse(REPO / image.dockerfile)
    users = stages[-1].all("USER")
    assert users, "the runtime stage sets no USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0, users[-1]
    assert not gid or (gid.isdigit() and int(gid) > 0), users[-1]
    env = " ".join(stages[-1].all("ENV"))
    assert "PYTHONDONTWRITEBYTECODE=1" in env  # nothing written next to the code
    assert stages[-1].all("WORKDIR")[-1] == "/tmp"  # the only writable directory


@pytest.mark.parametrize("image", IMAGES, ids=lambda i: i.dockerfile)
def test_only_the_needed_extra_is_installed(image: ImageSpec) -> None:
    _, stages = parse(REPO / image.dockerfile)
    runs = " ".join(run for stage in stages for run in stage.all("RUN"))
    assert set(re.findall(r"\.\[([\w,]+)\]", runs)) == {image.extra}


@pytest.mark.parametrize("image", IMAGES, ids=lambda i: i.dockerfile)
def test_entrypoint_is_the_console_script(image: ImageSpec) -> None:
    _, stages = parse(REPO / image.dockerfile)
    final = stages[-1]
    assert json.loads(final.all("ENTRYPOINT")[-1]) == image.entrypoint
    cmds = final.all("CMD")
    assert (json.loads(cmds[-1]) if cmds else None) == image.cmd
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    target = scripts[image.console_script]
    module_name, _, function = target.partition(":")
    module = importlib.import_module(module_name)
    assert callable(getattr(module, function)), target


def test_operator_entry_module_imports() -> None:
    module = importlib.import_module("sso_operator.__main__")
    assert callable(module.main)


def test_service_entry_module_imports() -> None:
    module = importlib.import_module("sso.cli")
    assert callable(module.main)


@pytest.mark.parametrize("image", IMAGES, ids=lambda i: i.dockerfile)
def test_wheel_builds_from_exactly_the_copied_files(image: ImageSpec, tmp_path: Path) -> None:
    """What the build stage's `pip install .[extra]` would install, from the same files."""
    _, stages = parse(REPO / image.dockerfile)
    context = tmp_path / "context"
    context.mkdir()
    patterns = dockerignore_patterns()
    for source in copy_sources(stages[0]):
        src = REPO / source
        if src.is_dir():
            shutil.copytree(
                src,
                context / source,
                ignore=lambda d, names: [
                    n for n in names if ignored(str((Path(d) / n).relative_to(REPO)), patterns)
                ],
            )
        else:
            shutil.copy2(src, context / source)
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *isolation, "-w", "out", "."],
        cwd=context,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = (context / "out").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        files = archive.namelist()
    assert all(name in files for name in image.wheel_must_contain)
    assert not any(image.wheel_must_not_contain in name for name in files)
