"""The model registry: each module of this package (``base`` and ``layers`` aside) is one model, ``MODEL``.

A new model is one module here and one ``conf/model/<name>.yaml`` holding its name and its own
parameters (the module's ``Params`` defaults). Everything else reads a model through :func:`resolve`:
the configuration check, :func:`fedheart.model.build_model`, the saved model's layers
(``fedheart predict``, ONNX), checkpoints and ``final_model.json`` (:func:`saved_spec`).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import pkgutil
import typing
from collections.abc import Mapping
from typing import Any

from fedheart.models.base import ModelType
from fedheart.specs import ModelSpec

__all__ = ["LEGACY_KEYS", "ModelSpecError", "ModelType", "full_spec", "model_names", "model_type", "registry",
           "resolve", "same_model", "saved_spec"]

_NOT_MODELS = ("base", "layers")
# Every spec written before the registry (messages, checkpoints' configurations, final_model.json) carried
# these three for every model; logistic regression ignored them.
LEGACY_KEYS = ("hidden", "layers", "dropout")


class ModelSpecError(ValueError):
    """A model spec names an unknown model or parameter, or a wrong value; ``key`` is its config key."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"invalid value for '{key}': {problem}")
        self.key, self.problem = key, problem


@functools.cache
def registry() -> dict[str, ModelType]:
    """Every model of the package, by name (its modules are imported once; none imports torch)."""
    found: dict[str, ModelType] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name in _NOT_MODELS or info.name.startswith("_"):
            continue
        kind = importlib.import_module(f"{__name__}.{info.name}").MODEL
        if kind.name in found:
            raise RuntimeError(f"two models of fedheart.models are named {kind.name!r}")
        found[kind.name] = kind
    return dict(sorted(found.items()))


def model_names() -> tuple[str, ...]:
    return tuple(registry())


def model_type(name: str) -> ModelType:
    kinds = registry()
    if name not in kinds:
        raise ModelSpecError("model.name", f"must be one of {', '.join(kinds)}, got {name!r}")
    return kinds[name]


def _coerce(key: str, value: Any, kind: Any) -> Any:
    """A parameter's value as its declared type (an int for a float is fine, a bool for a number is not)."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if kind is float and number:
        return float(value)
    wrong = {float: not number, int: not number or not isinstance(value, int), bool: not isinstance(value, bool),
             str: not isinstance(value, str)}
    if wrong.get(kind, False):
        raise ModelSpecError(key, f"must be {'an' if kind is int else 'a'} {kind.__name__}, got {value!r}")
    return value


def resolve(spec: ModelSpec) -> tuple[ModelType, Any]:
    """The spec's model and its parameters (defaults filled in, types and values checked)."""
    kind = model_type(spec.name)
    declared = typing.get_type_hints(kind.params)
    unknown = sorted(set(spec.params) - set(declared))
    if unknown:
        raise ModelSpecError(f"model.{unknown[0]}", f"{spec.name} has no parameter {unknown[0]!r} "
                             f"(its parameters: {', '.join(declared) or 'none'})")
    params = kind.params(**{k: _coerce(f"model.{k}", v, declared[k]) for k, v in spec.params.items()})
    for key, problem in kind.check(params):
        raise ModelSpecError(f"model.{key}", problem)
    return kind, params


def full_spec(spec: ModelSpec) -> ModelSpec:
    """The spec with every parameter of its model, defaults filled in (what a run folder records)."""
    _, params = resolve(spec)
    return ModelSpec(spec.name, dataclasses.asdict(params))


def saved_spec(saved: str | Mapping[str, Any] | None) -> ModelSpec:
    """The spec a file of any version holds: ``final_model.json``'s ``model_settings`` or a checkpoint's
    ``model`` (a name only before the registry); the legacy keys its model does not take are dropped."""
    if saved is None or isinstance(saved, str):
        return ModelSpec(saved or "logreg")
    data = dict(saved)
    name = str(data.pop("name", "logreg"))
    declared = set(typing.get_type_hints(model_type(name).params))
    return ModelSpec(name, {k: v for k, v in data.items() if k in declared or k not in LEGACY_KEYS})


def same_model(saved: str | Mapping[str, Any] | None, spec: ModelSpec) -> bool:
    """Whether a checkpoint's model is this spec's (a checkpoint made before the registry names it only)."""
    if saved is None or isinstance(saved, str):
        return (saved or "logreg") == spec.name
    return full_spec(saved_spec(saved)) == full_spec(spec)
