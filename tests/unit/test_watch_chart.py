"""The HTML report's watch charts, from report data: what is drawn for each sample, the threshold,
the moments, and host or provider text kept as text."""

from __future__ import annotations

import re

from deployer.render.watch_chart import watch_charts


def report(samples, phases=("watch the fleet", "revert"), verdict="failed"):
    checks = [{"name": "error ratio", "fails_if": "fails if > 0.05", "threshold": 0.05}]
    watch = {"label": "the fleet", "release": "r2", "verdict": verdict, "reason": "why", "seconds": 4.0}
    return {"phases": [{"name": name} for name in phases], "watches": [{**watch, "checks": checks, "samples": samples}]}


def sample(at, outcome, value, text="t"):
    return {"check": "error ratio", "at": at, "outcome": outcome, "value": value, "text": text}


def test_each_sample_is_drawn_with_its_outcome_and_the_line_joins_the_values():
    page = watch_charts(
        report(
            [sample(0, "inconclusive", None), sample(1, "pass", 0.01), sample(2, "fail", 0.3), sample(3, "error", None)]
        )
    )
    assert page.count('class="sample pass"') == 1 and page.count('class="sample fail"') == 1
    assert page.count('class="sample inconclusive"') == 1 and page.count('class="sample error"') == 1
    (points,) = re.findall(r'<polyline class="samples" points="([^"]+)"', page)
    assert len(points.split()) == 2  # only samples with a value are on the line
    assert page.count('class="threshold"') == 1 and "threshold 0.05" in page
    assert ">switched<" in page and ">revert<" in page


def test_a_passed_watch_ends_with_its_verdict_not_a_revert():
    page = watch_charts(report([sample(0, "pass", 0.0)], phases=("watch the fleet",), verdict="passed"))
    assert ">passed<" in page and ">revert<" not in page


def test_provider_text_stays_text():
    page = watch_charts(report([sample(1, "fail", 0.4, "<script>alert(1)</script>\x1b[2J")]))
    assert "<script>" not in page and "&lt;script&gt;" in page and "\x1b" not in page


def test_no_watch_no_section():
    assert watch_charts({"phases": []}) == ""
