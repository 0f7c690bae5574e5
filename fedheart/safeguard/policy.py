"""A hospital's own policy file: what it accepts to release, checked against every request.

The file is YAML (see docs/privacy.md): sections ``privacy``, ``data``, ``release`` and the list
``approved-apps`` (SHA-256 hashes of the app bundles this hospital runs; used by the hospital's launcher).
Keys a hospital leaves out take the *strict* default, so an
empty policy file is the strictest one. A request is accepted only if it is at least as strict as
the policy; the hospital's own values (delta, split, train fraction, fresh noise) replace what the
server sends. Nothing here can be changed by the server: the file is only read, by the hospital.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

MODES = ("none", "dp-sgd")  # weakest first; the central modes protect nothing at the record level here
EVALUATION = ("full", "dp", "none")
DEFAULT_DELTA = 1e-5  # the delta of a DP-SGD run unless the server or a policy asks a smaller one
SECTIONS: dict[str, dict[str, str]] = {  # policy key -> attribute, per section
    "privacy": {"require": "require", "max-epsilon-per-run": "max_epsilon_per_run",
                "lifetime-epsilon": "lifetime_epsilon", "delta": "delta",
                "min-noise-multiplier": "min_noise_multiplier", "seeded-noise": "seeded_noise"},
    "data": {"split-seed": "split_seed", "train-fraction": "train_fraction"},
    "release": {"baselines": "baselines", "tracking": "tracking", "evaluation": "evaluation",
                "max-evaluations-per-run": "max_evaluations_per_run",
                "evaluation-noise-multiplier": "evaluation_noise_multiplier"},
}
TOP_LEVEL = {"approved-apps": "approved_apps"}  # keys outside the sections


class PolicyError(ValueError):
    """The policy file is unreadable or holds an unknown key or a wrong value; the message names them."""


class Refused(Exception):
    """A request weaker than the policy: names the policy key, the requested and the allowed value."""

    def __init__(self, key: str, requested: Any, allowed: Any) -> None:
        self.key, self.requested, self.allowed = key, requested, allowed
        super().__init__(f"refused by the hospital's policy: {key} allows {allowed}, the request asked for "
                         f"{requested}")


@dataclass(frozen=True)
class Policy:
    """A hospital's policy (defaults: the strict values an empty file gets)."""

    path: str = "<built-in>"
    require: str = "dp-sgd"
    max_epsilon_per_run: float = 1.0
    lifetime_epsilon: float = 3.0
    delta: float = DEFAULT_DELTA
    min_noise_multiplier: float = 0.5
    seeded_noise: bool = False  # simulations only: honour the server's privacy.noise-seed
    split_seed: int = 43
    train_fraction: float = 0.66
    baselines: bool = False
    tracking: bool = False
    evaluation: str = "dp"
    max_evaluations_per_run: int = 16
    evaluation_noise_multiplier: float = 50.0
    approved_apps: tuple[str, ...] = field(default_factory=tuple)

    @property
    def dp_required(self) -> bool:
        return self.require == "dp-sgd"


def _lines(text: str) -> dict[tuple[str, ...], int]:
    """1-based line of every key path in the YAML text (for error messages)."""
    out: dict[tuple[str, ...], int] = {}

    def walk(node: yaml.Node, prefix: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                path = (*prefix, str(key.value))
                out[path] = key.start_mark.line + 1
                walk(value, path)

    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return out
    if root is not None:
        walk(root, ())
    return out


def _number(where: str, value: Any, *, low: float, high: float = math.inf, integer: bool = False,
            open_low: bool = False) -> float:
    if isinstance(value, str):  # YAML 1.1 reads 1e-6 (no decimal point) as text
        with contextlib.suppress(ValueError):
            value = float(value)
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if open_low else value >= low) and value <= high
    if ok and integer and float(value) != int(value):
        ok = False
    if not ok:
        kind = "an integer" if integer else "a number"
        bound = f"> {low:g}" if open_low else f">= {low:g}"
        raise PolicyError(f"{where}: must be {kind} {bound}" + (f" and <= {high:g}" if high < math.inf else "")
                          + f", got {value!r}")
    return int(value) if integer else float(value)


def _value(attr: str, where: str, value: Any) -> Any:
    """A checked value for one policy attribute."""
    if attr == "require":
        if value not in MODES:
            raise PolicyError(f"{where}: must be one of {', '.join(MODES)}, got {value!r}")
        return value
    if attr == "evaluation":
        if value not in EVALUATION:
            raise PolicyError(f"{where}: must be one of {', '.join(EVALUATION)}, got {value!r}")
        return value
    if attr in ("baselines", "tracking", "seeded_noise"):
        if not isinstance(value, bool):
            raise PolicyError(f"{where}: must be true or false, got {value!r}")
        return value
    if attr == "approved_apps":
        if not isinstance(value, list) or not all(isinstance(h, str) and len(h) == 64
                                                  and all(c in "0123456789abcdef" for c in h.lower())
                                                  for h in value):
            raise PolicyError(f"{where}: must be a list of SHA-256 hashes (64 hex digits), got {value!r}")
        return tuple(h.lower() for h in value)
    if attr == "delta":
        return _number(where, value, low=0.0, high=0.1, open_low=True)
    if attr == "train_fraction":
        return _number(where, value, low=0.05, high=0.95)
    if attr in ("split_seed", "max_evaluations_per_run"):
        return _number(where, value, low=0, integer=True)
    return _number(where, value, low=0.0, open_low=True)  # epsilons and noise multipliers


def parse_policy(text: str, path: str = "<text>") -> Policy:
    """A :class:`Policy` from YAML text; :class:`PolicyError` names file, line, key and value."""
    lines = _lines(text)

    def where(*keys: str) -> str:
        line = lines.get(tuple(keys))
        return f"{path}" + (f", line {line}" if line else "") + f", key {'.'.join(keys)}"

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise PolicyError(f"{path}: must be a mapping of the sections {', '.join(SECTIONS)}, got {type(data).__name__}")
    values: dict[str, Any] = {}
    for section, body in data.items():
        if section in TOP_LEVEL:
            values[TOP_LEVEL[section]] = _value(TOP_LEVEL[section], where(section), body)
            continue
        if section not in SECTIONS:
            raise PolicyError(f"{where(str(section))}: unknown section (known: {', '.join([*SECTIONS, *TOP_LEVEL])})")
        if not isinstance(body, dict):
            raise PolicyError(f"{where(section)}: must be a mapping, got {body!r}")
        for key, value in body.items():
            attr = SECTIONS[section].get(str(key))
            if attr is None:
                raise PolicyError(f"{where(section, str(key))}: unknown key (known in {section}: "
                                  f"{', '.join(SECTIONS[section])})")
            values[attr] = _value(attr, where(section, str(key)), value)
    policy = Policy(path=path, **values)
    if policy.max_epsilon_per_run > policy.lifetime_epsilon:
        raise PolicyError(f"{where('privacy', 'max-epsilon-per-run')}: {policy.max_epsilon_per_run:g} is more than "
                          f"privacy.lifetime-epsilon {policy.lifetime_epsilon:g}")
    return policy


def load_policy(path: str | Path) -> Policy:
    """Read the policy file (only read, never written)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{p}: cannot read the hospital policy: {exc}") from None
    return parse_policy(text, str(p))


def policy_keys() -> list[str]:
    """Every key a policy file may hold, as ``section.key``."""
    return [*(f"{s}.{k}" for s, keys in SECTIONS.items() for k in keys), *TOP_LEVEL]


_ATTRS = {a for keys in [*SECTIONS.values(), TOP_LEVEL] for a in keys.values()}
assert {f.name for f in fields(Policy)} - {"path"} == _ATTRS, "every Policy field has one key"
