"""The local fleet itself: separate hosts with their own identity and filesystem."""

import pytest

pytestmark = pytest.mark.fleet


def test_each_host_has_its_own_hostname_key_and_srv(local_fleet, views):
    names = [h.name for h in local_fleet.hosts()]
    assert [views[n].hostname() for n in names] == names
    for name in names:
        views[name].sh("echo %s > /srv/whoami", name)
    for name in names:
        assert views[name].sh("cat /srv/whoami") == name
        assert views[name].sh("id -un") == "deploy"
    keys = {line.split()[2] for line in open(local_fleet.known_hosts)}
    assert len(keys) == len(names)
