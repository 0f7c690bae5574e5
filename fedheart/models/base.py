"""What one model of the registry declares (:class:`ModelType`); plain Python, no torch."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any


def no_problems(params: Any) -> Iterable[tuple[str, str]]:
    return ()


@dataclass(frozen=True)
class ModelType:
    """One model: its name (``model.name``), its own parameters and how to build it.

    ``params`` is a frozen dataclass whose fields are the model's parameters with the defaults of
    ``conf/model/<name>.yaml``; ``build(params, n_features)`` returns an initialised torch module with
    one logit per row (torch imported inside it, so the registry loads without torch);
    ``linear_layers(params)`` names the state-dict prefixes of its Linear layers in order, with a ReLU
    between two of them (how ``fedheart predict`` and ONNX export run a saved model without torch);
    ``check(params)`` yields ``(parameter, problem)`` for values a type cannot rule out.
    """

    name: str
    params: type
    build: Callable[[Any, int], Any]
    linear_layers: Callable[[Any], list[str]]
    check: Callable[[Any], Iterable[tuple[str, str]]] = no_problems
