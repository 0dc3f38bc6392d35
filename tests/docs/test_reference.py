"""docs/settings.md and docs/api.md are what the code says (scripts/reference --check)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(
        sys.version_info[:2] != (3, 13), reason="the pages are made with Python 3.13"
    ),
]


def test_the_generated_reference_pages_are_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "reference"), "--check"],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert result.returncode == 0, result.stderr
