"""JUnit XML for CI: one test case per drill phase and host."""

from __future__ import annotations

from deployer.report import FAILED, GOOD_STATUSES, HostResult, OperationReport, shown


def write_junit(report: OperationReport, path: str) -> None:
    """A JUnit XML file: one test case per phase and host (per phase when it has no hosts), for CI."""
    import xml.etree.ElementTree as ElementTree  # noqa: PLC0415 - only needed for --junit

    cases: list[ElementTree.Element] = []
    for phase in report.phases:
        rows = phase.hosts or [HostResult("fleet", "ok" if phase.ok else FAILED, message=phase.detail)]
        for result in rows:
            case = ElementTree.Element(
                "testcase",
                classname=f"{report.operation}.{phase.name}",
                name=f"{phase.name} {result.host}",
                time=f"{(result.seconds or phase.seconds):.3f}",
            )
            good = result.status in GOOD_STATUSES and (phase.ok or bool(phase.hosts))
            if not good:
                failure = ElementTree.SubElement(
                    case, "failure", message=shown(result.message or phase.detail or "failed")
                )
                failure.text = shown(f"{result.host}: {result.status} {result.before or '-'} -> {result.after or '-'}")
            else:
                out = ElementTree.SubElement(case, "system-out")
                out.text = shown(f"{result.before or '-'} -> {result.after or '-'} {result.message}".strip())
            cases.append(case)
    failures = sum(1 for case in cases if case.find("failure") is not None)
    suite = ElementTree.Element(
        "testsuite",
        name=report.operation,
        tests=str(len(cases)),
        failures=str(failures),
        errors="0",
        time=f"{sum(phase.seconds for phase in report.phases):.3f}",
    )
    suite.extend(cases)
    root = ElementTree.Element("testsuites")
    root.append(suite)
    ElementTree.indent(root)
    ElementTree.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
