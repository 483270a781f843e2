"""The VM fleet's decisions that need no VM: how many VMs exist, the accelerator, settings."""

from __future__ import annotations

import pytest

from deployer.errors import FleetError, InputError
from deployer.playground import vmfleet


@pytest.fixture
def vagrant_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(vmfleet, "VAGRANT_DIR", tmp_path)
    return tmp_path


def made(folder, *names, destroyed=()):
    for name in names:
        machine = folder / ".vagrant" / "machines" / name / "libvirt"
        machine.mkdir(parents=True)
        if name not in destroyed:
            (machine / "id").write_text("uuid")


def test_existing_vms_are_the_ones_vagrant_still_has_an_id_for(vagrant_dir):
    made(vagrant_dir, "web1", "web2", "web3", destroyed=("web3",))
    assert vmfleet._machines() == {"web1", "web2"}


def test_asking_for_fewer_vms_than_exist_is_refused_before_anything_is_done(vagrant_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(vmfleet, "missing_tools", lambda: [])
    monkeypatch.setattr(vmfleet.os, "geteuid", lambda: 0)
    made(vagrant_dir, "web1", "web2", "web3")
    log = tmp_path / "logs" / "up.log"
    with pytest.raises(FleetError, match="web3 beyond --vms 2"):
        vmfleet.up(vmfleet.VmFleetSettings(vms=2), log)
    assert not log.parent.exists()  # nothing started, nothing logged


@pytest.mark.parametrize("settings", [vmfleet.VmFleetSettings(vms=0), vmfleet.VmFleetSettings(memory_mb=64)])
def test_settings_out_of_range_are_input_errors(settings):
    with pytest.raises(InputError):
        settings.check()


def test_the_accelerator_can_be_chosen_but_only_as_kvm_or_qemu(monkeypatch):
    monkeypatch.setenv("DEPLOYER_VM_DRIVER", "qemu")
    assert vmfleet.accelerator() == "qemu"
    monkeypatch.setenv("DEPLOYER_VM_DRIVER", "xen")
    with pytest.raises(InputError, match="kvm or qemu"):
        vmfleet.accelerator()
