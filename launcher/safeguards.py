"""A hospital's safeguards as a deployment checks and reports them: its policy file, parsed as its SuperNode
will parse it, and after a run each hospital's audit-trail verification and privacy budget."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from fedheart.safeguard.policy import Policy, load_policy


def check_policy(path: Path) -> tuple[Path, Policy]:
    """The policy file's absolute path and its rules, parsed as a SuperNode will parse it;
    :class:`PolicyError` (file, line, key and value) if it is unreadable or wrong."""
    absolute = Path(path).expanduser().resolve()
    return absolute, load_policy(absolute)


def safeguard_report(state_dirs: Mapping[str, Path], run_id: str | None = None,
                     policies: Mapping[str, Policy] | None = None) -> tuple[list[str], bool]:
    """Per hospital, its state folder's ``fedheart audit verify`` result and its privacy budget line(s)
    (run ``run_id`` and lifetime; what is left of the policy's ``lifetime-epsilon`` where ``policies``
    holds the hospital's). Returns the lines and whether every audit trail is intact."""
    from fedheart.safeguard import audit
    from fedheart.safeguard.budget import books

    lines, intact = [], True
    for name, state in state_dirs.items():
        ok, message = audit.verify(Path(state))
        intact = intact and ok
        lines.append(f"  {name}: audit {'OK' if ok else 'FAILED'}: {message}")
        policy = (policies or {}).get(name)
        found = books(Path(state))
        if not found:
            lines.append(f"  {name}: budget: no privacy ledger in {state}")
        for book in found:
            run = book.runs.get(str(run_id)) if run_id is not None else None
            if run_id is None:
                this = ""
            elif run is None:
                this = f"run {run_id} released nothing from this file; "
            elif run.reserved or run.epsilon:
                this = (f"run {run_id} spent epsilon {run.epsilon:.4f} of {run.reserved:g} reserved "
                        f"(delta {run.delta:g}); ")
            else:
                this = f"run {run_id} spent no epsilon (no DP release); "
            lifetime = book.lifetime()
            limit = (f" of {policy.lifetime_epsilon:g} ({max(policy.lifetime_epsilon - lifetime, 0):.4f} left)"
                     if policy is not None else "")
            data = book.data_name or f"sha256 {book.data_sha256[:16]}..."
            lines.append(f"  {name}: budget ({data}): {this}lifetime epsilon charged {lifetime:.4f}{limit}")
    return lines, intact

