"""Feature-level domain adaptation on frozen features: no network is trained.

Each method wraps a scikit-learn classifier. ``fit(X, y, domain=...)`` takes the
source rows and the target rows together, marked by ``domain`` (``"source"`` /
``"target"``, or 0 / 1); target rows whose label is ``-1`` are unlabelled
(scikit-learn's semi-supervised convention). ``predict(X)`` takes target-domain
features. Without ``domain`` every method is its plain classifier.

- :class:`CORAL` (Sun, Feng & Saenko 2016): whiten the source features with their
  covariance, re-colour them with the target's; the target stays as it is.
- :class:`SubspaceAlignment` (Fernando et al. 2013, skada's): align the source PCA basis
  to the target's with ``M = Ps^T Pt``; train on ``Xs Ps M``, predict on ``Xt Pt``.
- :class:`TransferComponentAnalysis` (Pan et al. 2011, skada's): a kernel embedding of both
  domains that shrinks their mean discrepancy.
- :class:`LinearOTMapping` (Flamary et al. 2019, skada's): the optimal-transport map between the
  domains' Gaussian fits, applied to the source rows.
- :class:`FeatureAugmentation` (Daumé III 2007, "frustratingly easy"): source rows
  become ``[x, x, 0]`` and target rows ``[x, 0, x]``; for a few labelled target images.
- :class:`BalancedDistributionAdaptation` (Wang et al. 2017; JDA, Long et al. 2013): a
  projection that shrinks the marginal and pseudo-labelled conditional MMD.
- :class:`SelectivePseudoLabeling` (Wang & Breckon 2020): a discriminative projection
  learned on the source and a growing, class-balanced selection of confident target pseudo
  labels, each from nearest class means and from the target's own clusters.

Examples
--------
>>> import numpy as np
>>> from cnnfeat.adaptation import CORAL
>>> X = np.r_[Xs, Xt]; y = np.r_[ys, -np.ones(len(Xt), int)]          # doctest: +SKIP
>>> domain = ["source"] * len(Xs) + ["target"] * len(Xt)                 # doctest: +SKIP
>>> CORAL().fit(X, y, domain=domain).score(Xt, yt)                       # doctest: +SKIP
"""

from cnnfeat.adaptation._base import (
    ADAPTATIONS,
    AdaptationKind,
    adaptation_kind,
    make_adaptation,
    register_adaptation,
    split_domains,
)
from cnnfeat.adaptation.alignment import CORAL, FeatureAugmentation
from cnnfeat.adaptation.mapping import LinearOTMapping, SubspaceAlignment, TransferComponentAnalysis
from cnnfeat.adaptation.projection import BalancedDistributionAdaptation, SelectivePseudoLabeling

__all__ = [
    "ADAPTATIONS",
    "CORAL",
    "AdaptationKind",
    "BalancedDistributionAdaptation",
    "FeatureAugmentation",
    "LinearOTMapping",
    "SelectivePseudoLabeling",
    "SubspaceAlignment",
    "TransferComponentAnalysis",
    "adaptation_kind",
    "make_adaptation",
    "register_adaptation",
    "split_domains",
]
