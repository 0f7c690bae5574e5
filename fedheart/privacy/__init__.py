"""Differential privacy on the hospital side (plain Python, no Flower).

- :mod:`fedheart.privacy.ledger`: every release a hospital made, as Opacus RDP history triples,
  its cumulative epsilon, noise calibration and the budget check.
- :mod:`fedheart.privacy.stats_dp`: the preprocessing statistics through the Gaussian mechanism.
- :mod:`fedheart.privacy.dpsgd`: one round of DP-SGD (Opacus) that adds to the ledger.
"""

# Metrics of a train reply under DP-SGD (besides train-loss, local-steps, num-examples).
EPSILON = "epsilon"  # cumulative epsilon spent by the hospital so far (statistics + rounds)
EXHAUSTED = "budget-exhausted"  # 1: the round would exceed the budget, nothing was trained
NOISE = "noise-multiplier"
