"""MuJoCo writes its warnings (e.g. deprecated XML attributes of Gymnasium's models) to
``MUJOCO_LOG.TXT`` in the working directory: run these tests from a temporary one so that
nothing is written into the repository."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _run_in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
