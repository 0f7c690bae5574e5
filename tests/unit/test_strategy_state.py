"""Strategy state in checkpoints (server_app.strategy_state): one adapter per family, through DP wrappers."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, FedAdam, FedAvg, FedProx, FedYogi

from server_app.strategy_state import FedOptState, Stateless, base_strategy, state_adapter


def _moments(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"layer.weight": rng.normal(size=(3, 2)), "layer.bias": rng.normal(size=2)}


@pytest.mark.parametrize("family", [FedAdam, FedYogi])
def test_fedopt_moments_survive_a_checkpoint_even_behind_a_dp_wrapper(family: type) -> None:
    def wrapped() -> DifferentialPrivacyServerSideFixedClipping:
        return DifferentialPrivacyServerSideFixedClipping(family(), noise_multiplier=0.1, clipping_norm=1.0,
                                                          num_sampled_clients=4)

    before = wrapped()
    base_strategy(before).m_t, base_strategy(before).v_t = _moments(1), _moments(2)  # type: ignore[attr-defined]
    adapter = state_adapter(before)
    assert isinstance(adapter, FedOptState)
    saved = adapter.save(before)
    assert set(saved) == {"m_t", "v_t"}

    after = wrapped()
    state_adapter(after).restore(after, saved)
    for attr, seed in (("m_t", 1), ("v_t", 2)):
        got = getattr(base_strategy(after), attr)
        assert {k: v.tolist() for k, v in got.items()} == {k: v.tolist() for k, v in _moments(seed).items()}


@pytest.mark.parametrize("family", [FedAvg, FedProx])
def test_stateless_strategies_save_nothing_and_refuse_foreign_state(family: type) -> None:
    strategy = family()
    adapter = state_adapter(strategy)
    assert isinstance(adapter, Stateless) and adapter.save(strategy) == {}
    adapter.restore(strategy, {})
    with pytest.raises(ValueError, match="m_t"):
        adapter.restore(strategy, {"m_t": {}})


def test_a_fedopt_checkpoint_with_unknown_state_is_refused() -> None:
    with pytest.raises(ValueError, match="momentum"):
        FedOptState().restore(FedAdam(), {"momentum": {}})
