"""Regenerates the `sso_proto` package from `service/proto`.

The .proto files keep their natural paths (`auth/auth.proto`, `sso/v1/...`) so
the wire names stay those of the seed service; they are copied under a
`sso_proto/` prefix before protoc runs so the generated modules import as
`sso_proto.auth.auth_pb2`. `--check` regenerates into a temp dir and fails when
the committed stubs differ (used by the test suite).
"""

from __future__ import annotations

import filecmp
import os
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "service" / "proto"
OUT = ROOT / "service"
PKG = "sso_proto"
SUFFIXES = (".py", ".pyi")


def generate(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / PKG
        shutil.copytree(PROTO, src)
        files = sorted(str(p.relative_to(tmp)) for p in src.rglob("*.proto"))
        include = str(Path(protoc.__file__).parent / "_proto")
        args = [
            "protoc",
            f"-I{tmp}",
            f"-I{include}",
            f"--python_out={out}",
            f"--mypy_out={out}",
            f"--grpc_python_out={out}",
            f"--mypy_grpc_out={out}",
            *files,
        ]
        env_path = str(Path(sys.executable).parent)
        os.environ["PATH"] = env_path + os.pathsep + os.environ.get("PATH", "")
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
    for d in [out / PKG, *[p for p in (out / PKG).rglob("*") if p.is_dir()]]:
        init = d / "__init__.py"
        if not init.exists():
            init.write_text('"""Generated gRPC stubs (make proto)."""\n')
    (out / PKG / "py.typed").touch()


def generated_files(base: Path) -> dict[str, Path]:
    return {
        str(p.relative_to(base)): p
        for p in (base / PKG).rglob("*")
        if p.is_file() and (p.suffix in SUFFIXES or p.name == "py.typed")
    }


def check() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        fresh, committed = generated_files(Path(tmp)), generated_files(OUT)
        stale = sorted(
            name
            for name in fresh.keys() | committed.keys()
            if name not in fresh
            or name not in committed
            or not filecmp.cmp(fresh[name], committed[name], shallow=False)
        )
    if stale:
        print("stale generated stubs (run `make proto`):", *stale, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    if "--check" in sys.argv:
        raise SystemExit(check())
    shutil.rmtree(OUT / PKG, ignore_errors=True)
    generate(OUT)
