"""An evaluation released through the Gaussian mechanism (a policy's ``release.evaluation: dp``).

The test rows' predicted probabilities are counted in ``COARSE`` equal bins per class (each row adds 1
to exactly one of the ``2 * COARSE`` counts: L2 sensitivity 1 under add/remove-one); Gaussian noise of
standard deviation ``z`` is added to every count and the release is the RDP history entry ``(z, 1.0, 1)``
in the hospital's ledger. Everything in the reply is computed from the noisy counts alone
(post-processing): the 100-bin histograms the server expects (each coarse count spread evenly over its
fine bins), the row count, accuracy at 0.5, AUC, a loss at the bins' centres and the clinical numbers of
:func:`fedheart.clinical.validation_from_histograms` (the keys of an exact evaluation). Crafted weights
can therefore read no more of a feature's distribution than these noisy counts show.
"""

from __future__ import annotations

import numpy as np

from fedheart.clinical import validation_from_histograms
from fedheart.histograms import HIST_BINS, auc_from_histograms, score_histograms
from fedheart.privacy.ledger import Ledger

COARSE = 10  # bins per class released under DP (fewer bins: less noise in what is derived from them)


def noisy_evaluation(labels: np.ndarray, scores: np.ndarray, noise_multiplier: float, ledger: Ledger,
                     rng: np.random.Generator) -> dict[str, float | list[float]]:
    """The metrics of an evaluate reply, released under DP; records the release in ``ledger``."""
    if noise_multiplier <= 0:
        raise ValueError(f"release.evaluation-noise-multiplier must be > 0, got {noise_multiplier}")
    pos, neg = (np.asarray(h, dtype=float) for h in score_histograms(labels, scores, bins=COARSE))
    noisy = np.concatenate([pos, neg]) + rng.normal(0.0, noise_multiplier, size=2 * COARSE)
    ledger.record(noise_multiplier, 1.0, 1)
    total = max(float(noisy.sum()), 1.0)  # unbiased sums first: clipping each count at 0 would inflate them
    half = COARSE // 2
    accuracy = float(np.clip((noisy[half:COARSE].sum() + noisy[COARSE:COARSE + half].sum()) / total, 0.0, 1.0))
    noisy = np.clip(noisy, 0.0, None)
    pos, neg = noisy[:COARSE], noisy[COARSE:]
    spread = HIST_BINS // COARSE
    fine_pos, fine_neg = np.repeat(pos / spread, spread), np.repeat(neg / spread, spread)
    centres = (np.arange(COARSE) + 0.5) / COARSE
    loss = float((-(pos * np.log(centres)).sum() - (neg * np.log(1 - centres)).sum()) / max(float(noisy.sum()), 1.0))
    return {"loss": loss, "auc": auc_from_histograms(pos, neg), "accuracy": accuracy,
            "num-examples": float(round(total)), "hist-pos": fine_pos.tolist(), "hist-neg": fine_neg.tolist(),
            **validation_from_histograms(fine_pos, fine_neg)}
