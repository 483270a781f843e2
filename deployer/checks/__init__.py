"""The testinfra suite `inv verify` runs against every host (see test_release.py)."""
