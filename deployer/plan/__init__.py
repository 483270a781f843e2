"""Planning: pure functions from (inventory, intent, host states) to what each host will do.

No I/O happens here: every decision of an operation is made in this package, before anything
changes, and unit-tested without SSH. One module per decision:

- `rollback`: **where the rollback target is decided** (`choose_rollback_target`, `plan_rollback`)
- `deploy`: the release id a deploy uses, who stages and switches, its guards; the revert plan
- `drill`: the drill's preconditions, releases and target
- `prune`: which old releases go
- `names`: which release a person's name for it means (id, version, commit prefix)
- `facts`: what the fleet's states say together (split, pin, schema, bad marks, releases)
- `model`: the plan's shape (per-host actions)
"""

from deployer.plan.deploy import batches, choose_release_id, plan_deploy, plan_revert
from deployer.plan.drill import DrillPlan, plan_drill
from deployer.plan.facts import (
    bad_marks,
    describe_pin,
    describe_releases,
    describe_split,
    fleet_clock,
    fleet_pin,
    fleet_schema,
    manifest_of,
    schema_problem,
    split_of,
)
from deployer.plan.model import (
    CACHE,
    FETCH,
    KEEP,
    REFUSE,
    REFUSED_REASON,
    STAGE,
    SWITCH,
    UNREACHABLE,
    UPLOAD,
    HostPlan,
    Plan,
)
from deployer.plan.prune import plan_prune, protected_releases, prune_list
from deployer.plan.rollback import choose_rollback_target, plan_rollback

__all__ = [
    "fleet_clock",
    "CACHE",
    "FETCH",
    "KEEP",
    "REFUSE",
    "REFUSED_REASON",
    "STAGE",
    "SWITCH",
    "UNREACHABLE",
    "UPLOAD",
    "DrillPlan",
    "HostPlan",
    "Plan",
    "bad_marks",
    "batches",
    "choose_release_id",
    "choose_rollback_target",
    "describe_pin",
    "describe_releases",
    "describe_split",
    "fleet_pin",
    "fleet_schema",
    "manifest_of",
    "plan_deploy",
    "plan_drill",
    "plan_prune",
    "plan_revert",
    "plan_rollback",
    "protected_releases",
    "prune_list",
    "schema_problem",
    "split_of",
]
