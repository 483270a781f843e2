"""finish: pin removal, pruning and the lock's release on hosts that were not switched (or whose
switch left the lock), judged by the hosts' confirmation records."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from deployer.errors import HostError
from deployer.lock import run_finish
from deployer.phases.run import Run


def finish(run: Run, hosts: list[str], unlock: bool = True, **options: Any) -> dict[str, str]:
    """Bad mark / pin / unpin / prune, then release our lock (when `unlock`), on `hosts`.

    Returns failures by host, judged from the host's confirmation records (an error, a warning, or
    a missing `unpinned`/`unlocked` confirmation is a failure), never from the exit status alone.
    Hosts where there is nothing to do are not contacted.
    """
    prune: Mapping[str, tuple[str, ...]] = options.pop("prune", {})
    failures: dict[str, str] = {}
    options_of = {
        name: {
            "unlock": run.lock.token if unlock and name in run.lock.held else "",
            "prune": " ".join(prune.get(name, ())),
            **options,
        }
        for name in hosts
    }
    options_of = {
        name: {**wanted, "fence": run.lock.token} for name, wanted in options_of.items() if any(wanted.values())
    }
    for name, outcome in run_finish(run.fleet, options_of, "finishing"):
        if isinstance(outcome, HostError):
            failures[name] = outcome.reason
            run.progress.host(name, f"warning: {outcome.reason}")
            continue
        problems = list(outcome.warnings)
        if options_of[name]["unlock"]:
            if outcome.lock_settled:
                run.lock.held.discard(name)
            else:
                problems.append("the lock was not confirmed released")
        if options_of[name].get("unpin") and outcome.pin not in ("unpinned", "not_pinned"):
            problems.append("the pin was not confirmed removed")
        if options_of[name].get("mark_bad") and not outcome.marked_bad:
            problems.append(f"release {options_of[name]['mark_bad']} was not confirmed marked bad")
        pruned = outcome.pruned
        if pruned:
            run.progress.host(name, f"pruned {len(pruned)} old release(s): {' '.join(pruned)}")
        if problems:
            failures[name] = "; ".join(problems)
            run.progress.host(name, f"warning: {failures[name]}")
    return failures
