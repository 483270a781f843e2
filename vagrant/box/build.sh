#!/bin/sh
# build.sh OUT_DIR: build the local Vagrant box for the libvirt provider from Debian's packages
# (no Vagrant Cloud), as root. Writes into OUT_DIR:
#   bookworm.box      the box (a tar of metadata.json, Vagrantfile and box.img, a qcow2 disk)
#   vmlinuz, initrd   the guest's kernel and initrd, booted directly by QEMU (the disk has no
#                     partition table and no boot loader; the box's Vagrantfile names their
#                     copies under /var/lib/libvirt/boot, which `inv vm-fleet-up` makes)
#   vagrant_key       the vagrant user's SSH key (made once; the box's Vagrantfile names it)
# The guest: Debian bookworm (minbase + systemd, OpenSSH, ifupdown, python3, curl, sudo), a
# `vagrant` user with that key and passwordless sudo, an empty /etc/machine-id and no
# SSH host keys: each VM makes its own at first boot and prints their fingerprints on the serial
# console, so they can be checked out of band. About a minute with a warm package cache.
set -eu
out=${1:?usage: build.sh OUT_DIR}
boot_dir=${DEPLOYER_VM_BOOT_DIR:-/var/lib/libvirt/boot}
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d "$out/build.XXXXXX")
trap 'rm -rf "$work"' EXIT

# The box's own key for the vagrant user (not Vagrant's public insecure key): made once, kept in
# OUT_DIR (mode 600), named by the box's Vagrantfile, so Vagrant has no key to replace at `up`.
[ -f "$out/vagrant_key" ] || ssh-keygen -q -t ed25519 -N '' -C deployer-box -f "$out/vagrant_key"
pub="$out/vagrant_key.pub"

echo "build.sh: debootstrapping bookworm (mmdebstrap)" >&2
mmdebstrap --quiet --variant=minbase \
    --include=openssh-server,systemd-sysv,udev,ifupdown,isc-dhcp-client,linux-image-cloud-amd64,python3,iproute2,sudo,curl,ca-certificates,procps,less \
    bookworm "$work/root"

root="$work/root"
# the vagrant user (administration, provisioning), with the box's own key
chroot "$root" useradd --create-home --shell /bin/bash vagrant
install -d -m 700 "$root/home/vagrant/.ssh"
install -m 600 "$pub" "$root/home/vagrant/.ssh/authorized_keys"
chroot "$root" chown -R vagrant:vagrant /home/vagrant/.ssh
echo 'vagrant ALL=(ALL) NOPASSWD: ALL' > "$root/etc/sudoers.d/vagrant"
chmod 440 "$root/etc/sudoers.d/vagrant"
chroot "$root" passwd -l root >/dev/null

echo 'LABEL=root / ext4 defaults 0 1' > "$root/etc/fstab"
printf 'auto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet dhcp\n' > "$root/etc/network/interfaces"
echo bookworm > "$root/etc/hostname"
printf '127.0.0.1 localhost\n' > "$root/etc/hosts"
# every VM its own identity: machine-id made at first boot, host keys too (see the unit below)
: > "$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id" "$root"/etc/ssh/ssh_host_*
echo 'UseDNS no' > "$root/etc/ssh/sshd_config.d/vagrant.conf"

cat > "$root/etc/systemd/system/host-keys.service" <<'UNIT'
[Unit]
Description=Make this VM's SSH host keys and print their fingerprints on the serial console
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A
ExecStart=/bin/sh -c 'for k in /etc/ssh/ssh_host_*_key.pub; do echo "host-key-fingerprint: $(ssh-keygen -l -f "$k")"; done > /dev/ttyS0'

[Install]
WantedBy=multi-user.target
UNIT
chroot "$root" systemctl enable host-keys.service >/dev/null 2>&1
# fingerprints again at every boot, for a VM whose keys were made at an earlier boot
cat > "$root/etc/systemd/system/host-keys-console.service" <<'UNIT'
[Unit]
Description=Print this VM's SSH host key fingerprints on the serial console
After=host-keys.service

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'for k in /etc/ssh/ssh_host_*_key.pub; do echo "host-key-fingerprint: $(ssh-keygen -l -f "$k")"; done > /dev/ttyS0'

[Install]
WantedBy=multi-user.target
UNIT
chroot "$root" systemctl enable host-keys-console.service >/dev/null 2>&1
chroot "$root" systemctl enable serial-getty@ttyS0.service >/dev/null 2>&1 || true
# No periodic jobs that compete with the tests for the CPU under QEMU's TCG (every instruction
# emulated): e2scrub_reap alone took 30 s of a boot.
chroot "$root" systemctl mask apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer \
    e2scrub_reap.service fstrim.timer >/dev/null 2>&1
rm -rf "$root/var/cache/apt/archives"/*.deb "$root/var/lib/apt/lists"/*

cp "$root"/boot/vmlinuz-* "$work/vmlinuz"
cp "$root"/boot/initrd.img-* "$work/initrd"
chmod 644 "$work/vmlinuz" "$work/initrd"

echo "build.sh: making the disk image" >&2
truncate -s 4G "$work/disk.raw"
mkfs.ext4 -q -L root -d "$root" "$work/disk.raw"
qemu-img convert -c -O qcow2 "$work/disk.raw" "$work/box.img"
rm -f "$work/disk.raw"

printf '{"provider":"libvirt","format":"qcow2","virtual_size":4}\n' > "$work/metadata.json"
cat > "$work/Vagrantfile" <<BOXFILE
# The local bookworm box: direct kernel boot (the disk is one ext4 file system, no boot loader).
Vagrant.configure("2") do |config|
  config.vm.provider "libvirt" do |lv|
    lv.kernel = "$boot_dir/deployer-bookworm-vmlinuz"
    lv.initrd = "$boot_dir/deployer-bookworm-initrd"
    lv.cmd_line = "root=/dev/vda rw console=ttyS0 net.ifnames=0 quiet"
  end
  config.ssh.private_key_path = "$out/vagrant_key"
  config.ssh.insert_key = false
end
BOXFILE
(cd "$work" && tar -cf "$work/bookworm.box" metadata.json Vagrantfile box.img)
mv "$work/vmlinuz" "$out/vmlinuz"
mv "$work/initrd" "$out/initrd"
mv "$work/bookworm.box" "$out/bookworm.box"
echo "build.sh: $out/bookworm.box ($(du -h "$out/bookworm.box" | cut -f1))" >&2
