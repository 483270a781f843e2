#!/usr/bin/env bash
# Set up what a job needs on a fresh Debian machine (as root) and run it:
#   ./dev.sh demo   the main job on a local 3-host fleet (installs only what the demo needs: sshd, a venv)
#   ./dev.sh test   the whole test suite (unit, integration against real sshd hosts, the VM suite); args go to pytest
#   ./dev.sh test --quick   lint, types, unit tests and a smoke deploy/rollback/drill on the local fleet (minutes)
#   ./dev.sh bench  the benchmark against a plain OpenSSH fan-out (benchmarks/bench.py; args passed on)
#   ./dev.sh setup  only the set-up for the tests (everything `test` installs)
set -euo pipefail
cd "$(dirname "$0")"

need_apt=()
want() {  # want COMMAND PACKAGE: install PACKAGE unless COMMAND is on PATH or in /usr/sbin
    command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || need_apt+=("$2")
}
# What the demo needs: real sshd hosts in their own namespaces, and a virtualenv.
want sshd openssh-server
want ssh-keyscan openssh-client
want unshare util-linux
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)

case "${1:-}" in
    test|setup|bench)
        want shellcheck shellcheck
        want ruby ruby        # only to check vagrant/Vagrantfile's syntax in the tests
        want sudo sudo        # the tests of `sudo: true` hooks
        want tmux tmux        # the tests of what the live view shows on a real terminal
        want chromium chromium  # the tests of the HTML report, in a real browser
        want nginx nginx      # the origin hosts pull artifacts from (pull deploys); started by the tests
        want prometheus prometheus  # the watch after the switch: a real Prometheus and Alertmanager,
        want prometheus-alertmanager prometheus-alertmanager  # started by the tests on loopback
        want curl curl
        want wget wget
        want git git
        # the local fleet's other userlands and login shells, and the shells the remote scripts and
        # the completion scripts are tested under
        want tcsh tcsh
        want fish fish
        want zsh zsh
        [ -x /bin/busybox ] || need_apt+=(busybox-static)
        # the VM fleet (vagrant/, tests/vm/): Vagrant with libvirt and QEMU, and what builds its box
        for tool in vagrant:vagrant virsh:libvirt-clients libvirtd:libvirt-daemon-system \
            qemu-system-x86_64:qemu-system-x86 qemu-img:qemu-utils mmdebstrap:mmdebstrap dnsmasq:dnsmasq-base \
            iptables:iptables ebtables:ebtables; do
            want "${tool%%:*}" "${tool#*:}"
        done
        compgen -G '/usr/share/rubygems-integration/all/gems/vagrant-libvirt-*' >/dev/null || need_apt+=(vagrant-libvirt)
        ;;
esac
if [ "${#need_apt[@]}" -gt 0 ]; then
    echo "installing: ${need_apt[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
if [ ! -x .venv/bin/deployer ] || [ pyproject.toml -nt .venv/.installed ]; then
    python3 -m venv .venv
    .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'
    touch .venv/.installed
fi
# The tool's own modules as bytecode, as a normal (non-editable) pip install leaves them: where
# PYTHONDONTWRITEBYTECODE is set (this machine, many container images) every start of the tool
# would compile all of them again (~60 ms of CPU per run). Only changed files are compiled; a file
# edited since is compiled in memory at its next import, as before.
.venv/bin/python -m compileall -q deployer tasks.py >/dev/null

case "${1:-}" in
    demo) exec .venv/bin/deployer demo ;;
    test)
        shift
        .venv/bin/ruff check deployer tasks.py tests benchmarks
        .venv/bin/mypy
        if [ "${1:-}" = --quick ]; then  # the inner loop: unit tests and a smoke on the local fleet
            shift
            .venv/bin/python -m pytest -n 4 tests/unit "$@"
            exec .venv/bin/python -m pytest -m smoke tests/integration "$@"
        fi
        if [ "$#" -gt 0 ]; then
            exec .venv/bin/python -m pytest "$@"
        fi
        # The whole suite. Beside the rest, from the start, the VM suite (its VMs boot under TCG: the
        # longest part, so it starts first); meanwhile the unit tests (4 processes), then the local
        # fleet's tests (mostly waiting on sshd hosts) in two processes, each with a fleet of its own
        # on its own subnet (tests/conftest.py) and whole files at a time (a file's fixtures are set
        # up once). They share nothing but the machine. The VM suite's report follows the rest's.
        vm_log=$(mktemp /tmp/deployer-vm-tests.XXXXXX)
        set -m  # the side runs as a job of its own: Ctrl-C (SIGINT) reaches it only through the trap below
        .venv/bin/python -m pytest tests/vm -p no:cacheprovider --basetemp=/tmp/deployer-vm-tests > "$vm_log" 2>&1 &
        vm_pid=$!
        set +m
        # stopped like the rest: SIGINT, so pytest tears its fleets and VMs down
        trap 'kill -INT -- "-$vm_pid" 2>/dev/null; wait "$vm_pid"; cat "$vm_log"; rm -f "$vm_log"; exit 130' INT TERM
        rest=0
        .venv/bin/python -m pytest -n 4 tests/unit -p no:cacheprovider --basetemp=/tmp/deployer-unit-tests || rest=$?
        .venv/bin/python -m pytest -n 2 --dist loadfile tests/integration tests/soak || rest=$?
        vm=0
        wait "$vm_pid" || vm=$?
        trap - INT TERM
        echo
        echo "=== the VM suite (tests/vm), run beside the rest ==="
        cat "$vm_log"
        rm -f "$vm_log"
        [ "$rest" = 0 ] && [ "$vm" = 0 ] ;;
    bench) shift; exec .venv/bin/python benchmarks/bench.py "$@" ;;
    setup) ;;
    *) echo "usage: ./dev.sh demo|test|bench|setup" >&2; exit 2 ;;
esac
