"""Shared fixtures of the adaptation tests: a single torch thread and a synthetic shifted-domain problem."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from prodkg.adaptation import MultiModal


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    # The networks here are tiny; on a shared 2-core machine extra threads only wait on each other.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def shifted_gaussians(
    seed: int = 0, n: int = 300, dim: int = 32, separation: float = 3.0, shift: float = 4.0
) -> tuple[MultiModal, np.ndarray, MultiModal, np.ndarray]:
    """Three Gaussian classes in ``dim`` dimensions; the target domain is the source shifted.

    Class ``k`` has mean ``separation * e_k`` (dimensions 0-2 carry the label) and
    unit covariance. In the target every other dimension is moved by ``shift``:
    no class information changes, but a source-only network, which never saw
    those dimensions vary together, maps target products to the wrong side of
    its boundaries. A domain-invariant bottleneck has to ignore that shift.
    """
    rng = np.random.default_rng(seed)
    eye = np.eye(3)

    def draw(is_target: bool) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 3, n)
        x = rng.normal(size=(n, dim))
        x[:, :3] += separation * eye[y]
        if is_target:
            x[:, 3:] += shift
        return x.astype(np.float32), y.astype(np.int64)

    xs, ys = draw(False)
    xt, yt = draw(True)
    return MultiModal.complete(image=xs), ys, MultiModal.complete(image=xt), yt


@pytest.fixture
def make_shifted():
    """The :func:`shifted_gaussians` factory, for tests that need other sizes or seeds."""
    return shifted_gaussians


@pytest.fixture(scope="module")
def shifted_problem() -> tuple[MultiModal, np.ndarray, MultiModal, np.ndarray]:
    return shifted_gaussians()
