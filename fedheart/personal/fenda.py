"""FENDA-FL's network: a global and a local feature extractor (each the model's body) and a local head
over both; and its export as one plain MLP (block-diagonal layers), so ``fedheart predict`` and ONNX run it."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fedheart.model import build_model, get_weights, set_weights
from fedheart.models import full_spec
from fedheart.specs import ModelSpec

Weights = dict[str, np.ndarray]
LOCAL, HEAD = "local.", "head."


def body_of(model: nn.Module) -> nn.Sequential:
    """A registry model's body: every layer of its ``net`` but the last linear one (the head)."""
    net = getattr(model, "net", None)
    if not isinstance(net, nn.Sequential) or len(net) < 2:
        raise ValueError("this personalisation needs a model with hidden layers (model=mlp): the model's body is "
                         "shared and its head stays at the hospital")
    return net[:-1]


class Fenda(nn.Module):
    """``head(concat(global_body(x), local_body(x)))``: one logit per row."""

    def __init__(self, global_model: nn.Module, local_model: nn.Module) -> None:
        super().__init__()
        self.global_model, self.local_model = global_model, local_model
        for unused in (global_model.net[-1], local_model.net[-1]):  # the models' own heads: not in FENDA
            unused.requires_grad_(False)
        width = next(iter(global_model.net[-1].parameters())).shape[1]
        self.head = nn.Linear(2 * width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = torch.cat([body_of(self.global_model)(x), body_of(self.local_model)(x)], dim=-1)
        return self.head(features).squeeze(-1)


def build_fenda(spec: ModelSpec, n_features: int, global_weights: Weights, local: Weights | None,
                seed: int) -> Fenda:
    """The FENDA network of ``spec``: the received global weights, the hospital's local parts (a fresh
    local extractor and head, initialised from ``seed``, on its first round)."""
    global_model = build_model(spec, n_features)
    set_weights(global_model, global_weights)
    net = Fenda(global_model, build_model(spec, n_features, seed=seed))
    if local:
        net.local_model.load_state_dict({k[len(LOCAL):]: torch.as_tensor(v) for k, v in local.items()
                                         if k.startswith(LOCAL)})
        net.head.load_state_dict({k[len(HEAD):]: torch.as_tensor(v) for k, v in local.items() if k.startswith(HEAD)})
    return net


def local_parts(net: Fenda) -> Weights:
    """What stays at the hospital: the local extractor and the head."""
    return {**{LOCAL + k: v for k, v in get_weights(net.local_model).items()},
            **{HEAD + k: v for k, v in get_weights(net.head).items()}}


def as_mlp(net: Fenda, spec: ModelSpec) -> tuple[ModelSpec, Weights]:
    """The same function as one MLP with twice the hidden units: the first layer stacks both extractors'
    rows, each later hidden layer is block-diagonal, the last layer is the head (ReLU and Dropout act per
    unit, so the two halves stay apart)."""
    params = full_spec(spec).params
    g, loc = get_weights(net.global_model), get_weights(net.local_model)
    layers = int(params["layers"])
    weights: Weights = {}
    for i in range(layers):
        key = f"net.{3 * i}"
        wg, wl = g[f"{key}.weight"], loc[f"{key}.weight"]
        if i == 0:
            w = np.vstack([wg, wl])
        else:
            w = np.zeros((wg.shape[0] + wl.shape[0], wg.shape[1] + wl.shape[1]), dtype=wg.dtype)
            w[:wg.shape[0], :wg.shape[1]], w[wg.shape[0]:, wg.shape[1]:] = wg, wl
        weights[f"{key}.weight"] = w
        weights[f"{key}.bias"] = np.concatenate([g[f"{key}.bias"], loc[f"{key}.bias"]])
    head = get_weights(net.head)
    weights[f"net.{3 * layers}.weight"], weights[f"net.{3 * layers}.bias"] = head["weight"], head["bias"]
    return ModelSpec(spec.name, {**params, "hidden": 2 * int(params["hidden"])}), weights
