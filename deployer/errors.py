"""The deployer's error hierarchy: every failure a user can see is one of these.

    DeployerError                 exit 1 unless said otherwise; str() is the whole message
    ├── InputError                exit 2: bad input, nothing contacted or changed
    │   ├── InventoryError        names the file and the key
    │   └── ArtifactError         unreadable or unsafe artifact
    ├── PlanRefused               exit 3: refused as a whole, nothing changed
    │   └── LockHeld              another operation holds the fleet lock
    ├── HostError                 one host failed; `reason` is its line in the summary
    │   ├── HostUnreachable       connect, handshake or the connection itself failed
    │   ├── HostKeyRejected       unknown, changed or revoked host key
    │   ├── AuthFailed            credentials refused
    │   ├── CommandTimeout        a remote step outlived its limit
    │   ├── StepFailed            a remote step exited non-zero (exit code, output)
    │   └── ProtocolError         a host's answer broke the protocol (deployer.protocol)
    ├── Interrupted               Ctrl-C: where each host ended up (exit 130, or 0 when it had completed)
    └── FleetError                the local test fleet could not start or stop

Paramiko, socket and EOF errors become these in one place, `deployer.fleet` (connecting:
`classify_connect_error`; an open connection: `transport_errors`), so the rest of the code and
the reporter only ever see these types. `deployer.exits.guarded` is where everything ends: these
as their message and exit status, anything else as one line and the run log.
"""

from __future__ import annotations

# Process exit statuses, documented in docs/commands.md ("Exit status").
EXIT_OK = 0
EXIT_HOSTS_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_REFUSED = 3
EXIT_INTERRUPTED = 130


class DeployerError(Exception):
    """Base class; `str(error)` is a complete message for the operator."""

    exit_code = EXIT_HOSTS_FAILED


class InputError(DeployerError):
    """Bad input from the user (inventory, artifact, arguments): nothing was contacted or changed."""

    exit_code = EXIT_BAD_INPUT


class InventoryError(InputError):
    """A malformed inventory, naming the file and the key."""

    def __init__(self, path: str, key: str, problem: str) -> None:
        self.path = path
        self.key = key
        self.problem = problem
        where = f"{path}: {key}" if key else path
        super().__init__(f"{where}: {problem}")


class ArtifactError(InputError):
    """An artifact that cannot be deployed (unreadable, unsafe member, wrong format)."""


class PlanRefused(DeployerError):
    """The plan refuses the operation as a whole (nothing to roll back to, drift, ...)."""

    exit_code = EXIT_REFUSED


class LockHeld(PlanRefused):
    """Another operation holds the fleet lock."""


class Interrupted(DeployerError):
    """Ctrl-C stopped the operation; `hosts` says where each host ended up, read back from the host.

    `complete`: every host had already switched and recorded this run's success (its checks passed),
    so the operation did what it was asked and only the controller's closing steps were cut short:
    exit 0, said as such. Otherwise exit 130.
    """

    def __init__(self, message: str, hosts: list[dict[str, object]], complete: bool) -> None:
        self.hosts = hosts
        self.complete = complete
        self.exit_code = EXIT_OK if complete else EXIT_INTERRUPTED
        super().__init__(message)


class FleetError(DeployerError):
    """The local fleet of test hosts could not be started, used or stopped."""


class HostError(DeployerError):
    """A failure on one host; `reason` is the short text shown in the per-host summary."""

    def __init__(self, host: str, reason: str) -> None:
        self.host = host
        self.reason = reason
        super().__init__(f"{host}: {reason}")


class HostUnreachable(HostError):
    """TCP connect failed, timed out, or the SSH handshake did not complete."""


class HostKeyRejected(HostError):
    """The host's key is unknown to, or differs from, the configured known_hosts."""


class AuthFailed(HostError):
    """The SSH server refused our credentials."""


class CommandTimeout(HostError):
    """A remote step did not finish within its time limit."""


class StepFailed(HostError):
    """A remote step exited non-zero; carries its exit code and output."""

    def __init__(self, host: str, step: str, exit_code: int, message: str, output: str = "") -> None:
        self.step = step
        self.exit_status = exit_code
        self.output = output
        # The script's exit status is the tool's own code (deployer/scripts.py): what failed is said in
        # words; the number is shown only when nothing better is known (and stays in `exit_status`).
        said = message and message != "no output"
        super().__init__(host, f"{step} failed: {message}" if said else f"{step} failed (exit {exit_code}, no output)")
