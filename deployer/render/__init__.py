"""Rendering: one module per output form, every one fed through `deployer.report.shown`.

- `text`: plain lines (operation summaries, status, history, releases, lock status)
- `json`: one JSON document
- `junit`: JUnit XML for CI (the drill)
- `live`: the live per-host view and final table on a terminal (rich)
"""
