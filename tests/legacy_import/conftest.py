"""The import tests use the service harness of tests/api and the legacy database builder."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).parent
for path in (HERE, HERE.parent / "api"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
