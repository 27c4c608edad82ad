"""Deep ensembles: heads of one configuration trained from different seeds, their class probabilities averaged.

With one labelled photo per product (grocery's iconic photos), what a head predicts for the shelf photos depends a
great deal on its random start and batch order: three seeds of the same run differ by up to 4 points, and they err
on different photos. Averaging the probabilities of heads trained from different seeds (Lakshminarayanan et al.,
"Simple and Scalable Predictive Uncertainty Estimation using Deep Ensembles", NeurIPS 2017) removes much of that
variance, and the average is better calibrated than any one member. The cost is one training per member.

With ``auto`` the candidates are chosen once: the extra members retrain the chosen candidate's configuration from
their own seeds, on every source row. Where ``auto`` already averages its top candidates, or refined its choice
by target class centroids, the model is left as it is and the selection record says so.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from prodkg.adaptation.config import AUTO, TrainConfig
from prodkg.adaptation.model import AdaptedModel, EnsembleNetwork

__all__ = ["MEMBER_SEED_STRIDE", "combine", "member_seeds", "members_of", "train_ensemble"]

#: Member ``m`` trains from ``seed + m * MEMBER_SEED_STRIDE``: member 0 is the single head of the same seed, and
#: the members of runs with neighbouring seeds (0, 1, 2, ...) do not share seeds.
MEMBER_SEED_STRIDE = 10_007


def member_seeds(seed: int, size: int) -> list[int]:
    """The seeds of an ensemble of ``size`` heads whose configuration has ``seed``."""
    return [seed + m * MEMBER_SEED_STRIDE for m in range(size)]


def train_ensemble(source, y_source: np.ndarray, target, n_classes: int, config: TrainConfig, *, progress: bool = False,
                   groups: np.ndarray | None = None, first: AdaptedModel | None = None) -> AdaptedModel:
    """Train ``config.ensemble`` heads of ``config`` (``auto``: of the candidate it chooses), one per seed of
    :func:`member_seeds`, and return their :class:`~adaptation.model.EnsembleNetwork` as one model.

    Arguments are those of :func:`adaptation.train`, which calls this when ``config.ensemble > 1``; ``first``, a
    single head already trained on these rows with ``config`` (``auto``: the model it chose), becomes the first
    member instead of a new one. The returned model's config is the (chosen) configuration with ``ensemble`` set.
    Its ``selection`` (``auto`` only) is the first member's, with ``seed_ensemble`` telling how many members were
    averaged or why none were added (``auto``'s own ``ensemble`` names the candidates it averaged, if any).
    """
    from prodkg.adaptation.loop import train_method
    from prodkg.adaptation.selection import auto_train

    size = config.ensemble
    if first is None:
        single = dataclasses.replace(config, ensemble=1)
        first = (auto_train(source, y_source, target, n_classes, single, progress=progress, groups=groups) if single.method == AUTO
                 else train_method(source, y_source, target, n_classes, single, progress=progress))
    chosen = first.config
    if first.refined or isinstance(first.network, EnsembleNetwork):
        why = ("refined by target class centroids" if first.refined else "already an average of auto's top candidates")
        if first.selection is not None:
            first.selection["seed_ensemble"] = {"members": 1, "skipped": f"the chosen model is {why}"}
            first.selection["reason"] += f"; no ensemble of {size} heads: the chosen model is {why}"
        return first
    seeds = member_seeds(chosen.seed, size)
    others = [train_method(source, y_source, target, n_classes, dataclasses.replace(chosen, seed=seed), progress=progress)
              for seed in seeds[1:]]
    if first.selection is not None:
        first.selection["seed_ensemble"] = {"members": size, "seeds": seeds}
        first.selection["reason"] += f"; probabilities averaged over {size} heads of it trained from seeds {', '.join(map(str, seeds))}"
    return combine([first, *others], dataclasses.replace(chosen, ensemble=size))


def members_of(model: AdaptedModel) -> list[AdaptedModel]:
    """The members of an ensemble of seeds as models of their own (history and selection stay with the ensemble)."""
    if not isinstance(model.network, EnsembleNetwork):
        raise ValueError("members_of expects a model whose network is an EnsembleNetwork")
    return [AdaptedModel(net, net.config, model.n_classes, model.dims) for net in model.network.members]


def combine(members: list[AdaptedModel], config: TrainConfig) -> AdaptedModel:
    """One model averaging ``members`` under ``config``; history, adaptation parameter count and selection are
    the first member's."""
    first = members[0]
    return AdaptedModel(EnsembleNetwork([m.network for m in members]), config, first.n_classes, first.dims, history=first.history,
                        n_adaptation_params=first.n_adaptation_params, selection=first.selection)
