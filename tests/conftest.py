"""Shared by every test. pytest (import mode ``prepend``) puts this folder on ``sys.path``
when it loads this file, so the tests import the cohort builders beside it
(``fixtures_adni``, ``fixtures_preprocess``) by name, with no path set up of their own."""

from __future__ import annotations

from pathlib import Path

import pytest

#: The project's root.
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo() -> Path:
    """The project's root folder."""
    return REPO
