"""deployer: symlink-release deploys, verified parallel rollbacks and rollback drills over SSH."""

__version__ = "0.1.0"
