"""Fixtures shared by every test package."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One torch thread for a module's tests (tiny tensors: one thread is fastest, and the
    other core stays free for the other pytest-xdist worker); restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True, scope="session")
def sb3_logdir_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """SB3's default logger makes an ``SB3-<date>`` folder in the system temp dir on every
    ``learn`` without a logger; point it at pytest's own temp dir instead."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SB3_LOGDIR", str(tmp_path_factory.mktemp("sb3-default-log")))
        yield
