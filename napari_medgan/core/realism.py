"""Can synthetic patches be told from real ones? A classifier two-sample test (C2ST).

A small 3D CNN is trained on the spot to separate the two sets (Lopez-Paz & Oquab, ICLR
2017); its cross-validated held-out ROC AUC is the answer: 0.5 means indistinguishable,
1 means always told apart. The verdict is only as good as the classifier's training, so
the default budget is chosen to find blur and a subtle checkerboard on real brain
patches (tests/core/test_realism.py) and what a generator trained against a local critic
gets wrong, while a set of 64 + 64 patches of 32³ takes about 15 CPU seconds of one
thread (an evaluate's three tests and its sampling: 52 s). Always read it next to the
AUC of two real sets under the same protocol (:func:`c2st` on real vs real), which says
what chance looks like at that size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import ConfigError
from .metrics import _check_patches, _check_same_shape, auroc

__all__ = ["c2st"]

C2ST_WIDTH = 8  # channels of the classifier's first layer (doubled at each downsampling)
# passes over the training folds: 10 left a generator trained against a second critic at
# 0.60 that 30 epochs, or 4× the patches, told apart at 0.91–1.00 (bench/README.md)
C2ST_EPOCHS = 30
C2ST_BATCH = 8
C2ST_LEARNING_RATE = 3e-3


def _classifier(channels: int, width: int) -> nn.Module:
    """Three stride-2 convolutions (32³ → 4³), one more at 4³, global average pool, linear.

    The pooled features are local statistics (edge energy, texture, contrast), which is
    where a generator's faults show: blur, checkerboards, wrong tissue contrast.
    """
    act = nn.LeakyReLU(0.2)
    return nn.Sequential(
        nn.Conv3d(channels, width, 3, stride=2, padding=1), act,
        nn.Conv3d(width, 2 * width, 3, stride=2, padding=1), act,
        nn.Conv3d(2 * width, 4 * width, 3, stride=2, padding=1), act,
        nn.Conv3d(4 * width, 4 * width, 3, padding=1), act,
        nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(4 * width, 1),
    )


def _classifier_inputs(patches: Tensor) -> Tensor:
    """Each patch and its fine detail (minus its 3³ local mean) as channels, each channel
    standardised over all patches of both sets (labels unused, so nothing leaks).

    Fine detail is where blur and checkerboards live but it is a small signal next to
    the anatomy; standardised on its own channel it is found in a few epochs.
    """
    detail = patches - F.avg_pool3d(patches, 3, stride=1, padding=1, count_include_pad=False)
    x = torch.cat([patches, detail], dim=1)
    mean = x.mean(dim=(0, 2, 3, 4), keepdim=True)
    return (x - mean) / x.std(dim=(0, 2, 3, 4), keepdim=True).clamp_min(1e-8)


def _random_flips(batch: Tensor, gen: torch.Generator) -> Tensor:
    """Each spatial axis flipped for the whole batch with probability 1/2: the classifier's
    own augmentation, so it learns texture rather than where anatomy sits in the patch."""
    axes = [2 + a for a in range(3) if torch.rand((), generator=gen) < 0.5]
    return batch.flip(axes) if axes else batch


def _fold_scores(x: Tensor, y: Tensor, train: Tensor, test: Tensor, epochs: int,
                 gen: torch.Generator) -> Tensor:
    """Train a fresh classifier on ``train`` indices; its logits for the ``test`` indices."""
    model = _classifier(x.shape[1], C2ST_WIDTH)
    optimiser = torch.optim.Adam(model.parameters(), lr=C2ST_LEARNING_RATE)
    loss_fn = nn.BCEWithLogitsLoss()
    model.train()
    for _ in range(epochs):
        order = train[torch.randperm(len(train), generator=gen)]
        for batch in order.split(C2ST_BATCH):
            optimiser.zero_grad()
            loss = loss_fn(model(_random_flips(x[batch], gen)).squeeze(1), y[batch])
            loss.backward()
            optimiser.step()
    model.eval()
    with torch.no_grad():
        return model(x[test]).squeeze(1)


def c2st(real: Tensor, synthetic: Tensor, *, folds: int = 5,
         seed: int = 0) -> dict[str, float | int]:
    """Held-out ROC AUC of a small 3D CNN telling ``synthetic`` from ``real`` patches.

    Both are ``(N, C, D, H, W)`` in the normalised range the model sees ([-1, 1]), with the
    same patch shape; the classifier sees them with their fine detail as extra channels
    (:func:`_classifier_inputs`). Stratified ``folds``-fold cross-validation: every patch
    is scored once by a classifier that never saw it, and the AUC is computed on the
    pooled held-out scores (high score = synthetic). ``p_value`` is one-sided (AUC > 0.5
    by chance), from the normal approximation of the Mann–Whitney U statistic under the
    null hypothesis of exchangeable scores (mean 0.5, variance (n₁ + n₂ + 1) / (12 n₁ n₂)).
    Seeded: the same inputs and ``seed`` give the same numbers on the CPU; the caller's
    random state is left untouched.

    Keys: ``auc``, ``p_value``, ``n_real``, ``n_synthetic``, ``folds``, ``epochs``.
    """
    if folds < 2:
        raise ConfigError(f"The classifier two-sample test needs at least 2 folds, got {folds}.")
    real = _check_patches(real, "real patches", min_count=folds)
    synthetic = _check_patches(synthetic, "synthetic patches", min_count=folds)
    _check_same_shape(real, synthetic, ("real patches", "synthetic patches"), batch=False)
    x = _classifier_inputs(torch.cat([real, synthetic]).float().cpu())
    y = torch.cat([torch.zeros(len(real)), torch.ones(len(synthetic))])
    gen = torch.Generator().manual_seed(seed)
    fold_of = torch.empty(len(x), dtype=torch.long)
    for members in (torch.arange(len(real)), torch.arange(len(real), len(x))):  # stratified
        fold_of[members[torch.randperm(len(members), generator=gen)]] = (
            torch.arange(len(members)) % folds)
    scores = torch.empty(len(x))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the classifiers' initial weights
        for fold in range(folds):
            test = (fold_of == fold).nonzero().squeeze(1)
            train = (fold_of != fold).nonzero().squeeze(1)
            scores[test] = _fold_scores(x, y, train, test, C2ST_EPOCHS, gen)
    auc = auroc(scores, y.bool())
    n1, n2 = len(real), len(synthetic)
    z = (auc - 0.5) / math.sqrt((n1 + n2 + 1) / (12 * n1 * n2))
    return {"auc": auc, "p_value": 0.5 * math.erfc(z / math.sqrt(2)), "n_real": n1,
            "n_synthetic": n2, "folds": folds, "epochs": C2ST_EPOCHS}
