"""A hospital's safeguards as a deployment checks and reports them: its policy file, parsed as its SuperNode
will parse it, and after a run each hospital's audit-trail verification and privacy budget."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedheart.safeguard.policy import Policy, PolicyError, load_policy
from launcher.flower_tools import FlowerError


def check_policy(path: Path) -> tuple[Path, Policy]:
    """The policy file's absolute path and its rules, parsed as a SuperNode will parse it;
    :class:`PolicyError` (file, line, key and value) if it is unreadable or wrong."""
    absolute = Path(path).expanduser().resolve()
    return absolute, load_policy(absolute)


def check_policies(policy: Path | Mapping[str, Path], names: list[str]) -> tuple[dict[str, Path], dict[str, Policy]]:
    """Each hospital's policy file (``policy``: one for all, or one per hospital) and its rules, checked
    with :func:`check_policy`; :class:`PolicyError`, or :class:`FlowerError` naming a hospital without one."""
    files = policy if isinstance(policy, Mapping) else dict.fromkeys(names, policy)
    missing = sorted(set(names) - set(files))
    if missing:
        raise FlowerError(f"no policy file for {', '.join(missing)}")
    checked = {name: check_policy(Path(files[name])) for name in names}
    return {n: path for n, (path, _) in checked.items()}, {n: rules for n, (_, rules) in checked.items()}


def current_policies(files: Mapping[str, Path]) -> dict[str, Policy | None]:
    """Each hospital's policy as its file is now (a SuperNode reads it for every message); None if unreadable."""
    out: dict[str, Policy | None] = {}
    for name, path in files.items():
        try:
            out[name] = load_policy(path)
        except PolicyError:
            out[name] = None
    return out


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


def run_exit_code(record: Mapping[str, Any], intact: bool = True) -> int:
    """A launcher command's exit code for a finished run: 0 only if it completed and every hospital's audit
    trail verifies, else 1 with the reason on stderr."""
    if record.get("status") != "finished:completed":
        print(f"error: the run did not complete: {record.get('status-details')}", file=sys.stderr)
        return 1
    if not intact:
        print("error: a hospital's audit trail does not verify (see above)", file=sys.stderr)
        return 1
    return 0
