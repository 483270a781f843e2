#!/usr/bin/env bash
# Set up everything on a fresh Debian machine (as root) and run one job:
#   ./dev.sh demo   the main job on a local 3-host fleet: deploy v1, deploy v2, rollback, drill, status
#   ./dev.sh test   the whole test suite (unit, integration against real sshd hosts, the VM suite)
#   ./dev.sh bench  the benchmark against a plain OpenSSH fan-out (benchmarks/bench.py; args passed on)
#   ./dev.sh setup  only the set-up (.venv with the project, openssh-server, shellcheck, vagrant/libvirt/qemu)
set -euo pipefail
cd "$(dirname "$0")"

need_apt=()
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || need_apt+=(openssh-server)
command -v shellcheck >/dev/null 2>&1 || need_apt+=(shellcheck)
command -v unshare >/dev/null 2>&1 || need_apt+=(util-linux)
command -v ruby >/dev/null 2>&1 || need_apt+=(ruby)  # only to check vagrant/Vagrantfile's syntax in the tests
command -v sudo >/dev/null 2>&1 || need_apt+=(sudo)  # the tests of `sudo: true` hooks
command -v tmux >/dev/null 2>&1 || need_apt+=(tmux)  # the tests of what the live view shows on a real terminal
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)  # the tests of the HTML report, in a real browser
[ -x /usr/sbin/nginx ] || need_apt+=(nginx)  # the origin hosts pull artifacts from (pull deploys); started by the tests
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v wget >/dev/null 2>&1 || need_apt+=(wget)
# the local fleet's other userlands and login shells (inv fleet-up --userland), and the shells the
# remote scripts are tested under
command -v tcsh >/dev/null 2>&1 || need_apt+=(tcsh)
command -v fish >/dev/null 2>&1 || need_apt+=(fish)
command -v zsh >/dev/null 2>&1 || need_apt+=(zsh)  # the test of `deployer completion zsh`
[ -x /bin/busybox ] || need_apt+=(busybox-static)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
# the VM fleet (vagrant/, tests/vm/): Vagrant with libvirt and QEMU, and what builds its box
for tool in vagrant:vagrant virsh:libvirt-clients libvirtd:libvirt-daemon-system qemu-system-x86_64:qemu-system-x86 \
    qemu-img:qemu-utils mmdebstrap:mmdebstrap dnsmasq:dnsmasq-base iptables:iptables ebtables:ebtables; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${tool%%:*}" ] || need_apt+=("${tool#*:}")
done
compgen -G '/usr/share/rubygems-integration/all/gems/vagrant-libvirt-*' >/dev/null || need_apt+=(vagrant-libvirt)
if [ "${#need_apt[@]}" -gt 0 ]; then
    echo "installing: ${need_apt[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
if [ ! -x .venv/bin/inv ] || [ pyproject.toml -nt .venv/.installed ]; then
    python3 -m venv .venv
    .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'
    touch .venv/.installed
fi

case "${1:-}" in
    demo) exec .venv/bin/inv demo ;;
    test)
        shift
        .venv/bin/ruff check deployer tasks.py tests benchmarks
        .venv/bin/mypy
        exec .venv/bin/python -m pytest "$@" ;;
    bench) shift; exec .venv/bin/python benchmarks/bench.py "$@" ;;
    setup) ;;
    *) echo "usage: ./dev.sh demo|test|bench|setup" >&2; exit 2 ;;
esac
