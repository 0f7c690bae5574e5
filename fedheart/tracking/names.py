"""SageMaker Experiments names: the rules, checked here because moto does not enforce them.

SageMaker allows 1-120 characters matching ``[a-zA-Z0-9](-*[a-zA-Z0-9])*``; the SDK lowercases
names, so we accept lowercase only. The SDK's ``Run`` names its trial component
``<experiment>-<run>`` and allows each part at most 59 characters.
"""

from __future__ import annotations

import re
from datetime import datetime

MAX_NAME = 120
MAX_PART = MAX_NAME // 2 - 1  # the SDK's Run limit for the experiment and for the run name
_NAME = re.compile(r"[a-z0-9](-*[a-z0-9])*")
_STAMP = "%Y%m%d-%H%M%S"
RUN_ID_DIGITS = 10
# "<prefix>-<YYYYmmdd-HHMMSS>-<run id digits>" must fit in MAX_PART
MAX_PREFIX = MAX_PART - len("-20260101-000000-") - RUN_ID_DIGITS
AGGREGATOR = "aggregator"


class TrackingNameError(ValueError):
    """A name breaks SageMaker's naming rules; the message says which rule."""


def check_name(name: str, what: str = "name", max_len: int = MAX_NAME) -> str:
    """Return ``name`` if SageMaker accepts it (lowercase), else raise TrackingNameError."""
    if not name or len(name) > max_len:
        raise TrackingNameError(f"{what} {name!r} must have 1 to {max_len} characters, has {len(name)}")
    if not _NAME.fullmatch(name):
        raise TrackingNameError(f"{what} {name!r} may hold only a-z, 0-9 and '-', and must start and end "
                                "with a letter or digit")
    return name


def check_prefix(prefix: str) -> str:
    """The configured experiment prefix: a valid name short enough for the time and run id suffix."""
    return check_name(prefix, "experiment prefix", MAX_PREFIX)


def slug(text: str) -> str:
    """``text`` lowercased, with every run of other characters turned into one '-'."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def experiment_name(prefix: str, run_id: int, when: datetime) -> str:
    """Unique per run: ``<prefix>-<UTC time>-<last digits of the Flower run id>``."""
    suffix = f"{int(run_id) % 10**RUN_ID_DIGITS:0{RUN_ID_DIGITS}d}"
    return check_name(f"{check_prefix(prefix)}-{when.strftime(_STAMP)}-{suffix}", "experiment name", MAX_PART)


def hospital_run_name(hospital: str) -> str:
    """``client-<hospital>`` (its trial component is ``<experiment>-client-<hospital>``)."""
    body = slug(hospital)[: MAX_PART - len("client-")].strip("-") or "unnamed"
    return check_name(f"client-{body}", "run name", MAX_PART)


def trial_component_name(experiment: str, run_name: str) -> str:
    """The name the SDK gives a run's trial component, checked against every rule."""
    check_name(experiment, "experiment name", MAX_PART)
    check_name(run_name, "run name", MAX_PART)
    return check_name(f"{experiment}-{run_name}", "trial component name")
