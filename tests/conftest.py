"""Fixtures shared by the whole test suite."""

from __future__ import annotations

from pathlib import Path

import pytest

GOLDEN_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "golden"
"""Files written by the field's reference library; CI clones ``shared/`` beside the repo."""


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    """The folder of golden files, so compatibility tests never hard-code an absolute path."""
    if not (GOLDEN_DIR / "README.md").is_file():
        pytest.fail(
            f"golden files not found at {GOLDEN_DIR}: clone the 'shared' folder beside the "
            "repository (…/main and …/shared)",
            pytrace=False,
        )
    return GOLDEN_DIR
