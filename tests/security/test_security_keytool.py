"""`sso keys` command line: ensure, add-next, rotate, show, jwks, data-key."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from sso.config import Settings
from sso.security.keytool import default_retire_after, main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_lifecycle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = str(tmp_path / "keys")
    assert run(capsys, "ensure", "--dir", d, "--alg", "ES256")[2].startswith("created")
    assert run(capsys, "ensure", "--dir", d)[2].startswith("kept")
    assert run(capsys, "add-next", "--dir", d, "--alg", "ES256")[0] == 0
    code, _, err = run(capsys, "rotate", "--dir", d, "--alg", "ES256", "--retire-after", "600")
    assert code == 0 and err.startswith("active key")
    code, out, _ = run(capsys, "show", "--dir", d)
    shown = json.loads(out)
    assert sorted(k["state"] for k in shown["keys"]) == ["active", "next", "retired"]
    assert "PRIVATE" not in out
    code, out, _ = run(capsys, "jwks", "--dir", d)
    jwks = json.loads(out)
    assert len(jwks["keys"]) == 3 and all("d" not in k for k in jwks["keys"])


def test_cli_reports_a_broken_set(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "keyset.json").write_text("{}")
    code, _, err = run(capsys, "show", "--dir", str(tmp_path))
    assert code == 1 and err.startswith("error:") and "version" in err


def test_cli_data_key(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "data-key")
    assert code == 0 and len(out.strip()) == 43


def test_default_retire_after_covers_the_last_token() -> None:
    settings = Settings()
    assert default_retire_after(settings) >= (
        settings.tokens.access_ttl + settings.tokens.leeway + timedelta(seconds=5)
    )
