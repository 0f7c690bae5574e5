"""Whether a task's app may run at this hospital: its bundle's hash against the policy's ``approved-apps``,
and the hospital's own policy and audit code that the decision and a refusal use."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launcher.hospital.warm import forget_app_modules


@dataclass(frozen=True)
class Approval:
    """Whether a task's app may run here; ``reason`` (sent to the server) names the hash when not."""

    approved: bool
    fab_hash: str
    reason: str = ""


def decide(fab_hash: str, approved_apps: Iterable[str]) -> Approval:
    """Approve exactly the bundles whose SHA-256 the policy lists (case-insensitive); nothing else."""
    digest = (fab_hash or "").strip().lower()
    if not digest:
        return Approval(False, "", "refused by the hospital: the task names no app hash")
    if digest in {h.lower() for h in approved_apps}:
        return Approval(True, digest)
    return Approval(False, digest, f"refused by the hospital: app {digest} is not in its policy's approved-apps")


def unreadable_policy(fab_hash: str) -> Approval:
    """The decision when the policy file cannot be read: refused (the server learns nothing of the file)."""
    return Approval(False, (fab_hash or "").lower(), "refused by the hospital: its policy file cannot be read")


@dataclass(frozen=True)
class Safeguards:
    """The hospital's own policy and audit code (its installed ``fedheart.safeguard``, not a bundle's)."""

    load_policy: Callable[[Path], Any]
    policy_error: type[Exception]
    append: Callable[[Path, dict[str, Any]], Any]
    locked: Callable[[Path], Any]


def hospital_safeguards() -> Safeguards:
    """Import ``fedheart.safeguard``'s policy, audit and lock functions, keep them, and drop the
    modules from ``sys.modules`` again so that a child's loader imports the bundle's own ``fedheart``."""
    from fedheart.safeguard import audit, files, policy

    found = Safeguards(policy.load_policy, policy.PolicyError, audit.append, files.locked)
    forget_app_modules()
    return found
