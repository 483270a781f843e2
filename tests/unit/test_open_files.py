"""A fleet of hundreds of hosts needs more open files than a default soft limit (1024) allows: the
fleet raises its own soft limit within the hard one (in a child process, so this one keeps its own)."""

from __future__ import annotations

import resource
import subprocess
import sys

import pytest

PROBE = """
import resource, sys
from deployer.fleet import ensure_open_files
resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard}))
print(ensure_open_files({hosts}), resource.getrlimit(resource.RLIMIT_NOFILE)[0])
"""


@pytest.mark.parametrize(
    ("soft", "hard", "hosts", "expected"),
    [
        (1024, 8192, 1000, 3064),  # raised to what 1,000 hosts need
        (1024, 4096, 2000, 4096),  # as far as the hard limit allows
        (1024, 8192, 50, 1024),  # enough already: left alone
        (256, 8192, 4, 256),
    ],
)
def test_the_soft_limit_on_open_files_is_raised_within_the_hard_one(soft, hard, hosts, expected):
    real_hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if real_hard != resource.RLIM_INFINITY and real_hard < hard:
        pytest.fail(f"this machine's hard limit on open files ({real_hard}) is below the test's {hard}")
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(soft=soft, hard=hard, hosts=hosts)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(expected), str(expected)]
