"""The README and docs/ stay true: links and anchors resolve, every page is reachable from the README,
every `deployer ...` example parses with the program's own parser, the command reference equals the
table the program is built from, and the README's inventory example loads."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from deployer import reference
from deployer.arguments import ArgumentProblem
from deployer.commands import COMMANDS
from deployer.console import _parser
from tests.conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "vagrant" / "README.md"]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
SHELL_END = re.compile(r"\s(\||>|<|&&|;|2>)\s|\s#\s|\s#$")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    return {slug(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}


def links(page: Path) -> list[str]:
    return LINK.findall(FENCE.sub("", page.read_text()))


def test_the_readme_is_a_guide_not_the_specification():
    assert len((REPO / "README.md").read_text().splitlines()) <= 250


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO)))
def test_every_link_and_anchor_resolves(page):
    for target in links(page):
        if re.match(r"[a-z]+://", target) or target.startswith("mailto:"):
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        assert resolved.exists(), f"{page.name}: {target}: no such file"
        if anchor:
            assert resolved.suffix == ".md" and anchor in anchors(resolved), f"{page.name}: {target}: no such heading"


def test_every_docs_page_is_reachable_from_the_readme():
    seen, queue = set(), [REPO / "README.md"]
    while queue:
        page = queue.pop()
        if page in seen or page.suffix != ".md" or not page.exists():
            continue
        seen.add(page)
        for target in links(page):
            if not re.match(r"[a-z]+://", target):
                queue.append((page.parent / target.partition("#")[0]).resolve())
    unreachable = [page.name for page in (REPO / "docs").glob("*.md") if page.resolve() not in seen]
    assert not unreachable


def test_the_command_reference_is_the_table_the_program_is_built_from():
    page = (REPO / "docs" / "commands.md").read_text()
    assert page == reference.updated(page), "run: python -m deployer.reference"


def examples() -> list[tuple[str, str]]:
    """Every `deployer ...` command line in the docs: in shell blocks, and in inline code."""
    found = []
    for page in PAGES:
        text = page.read_text()
        for language, body in FENCE.findall(text):
            if language in ("sh", "console", "bash", ""):
                for line in body.splitlines():
                    line = line.removeprefix("$ ").strip()
                    if line.startswith("deployer ") or line.startswith(".venv/bin/deployer "):
                        found.append((page.name, line))
        for span in re.findall(r"`([^`\n]+)`", FENCE.sub("", text)):
            if re.match(r"(\.venv/bin/)?deployer [a-z]", span):
                found.append((page.name, span))
    return found


def test_the_docs_show_deployer_commands():
    assert len(examples()) > 60


@pytest.mark.parametrize(("page", "line"), examples())
def test_every_deployer_example_in_the_docs_parses(page, line):
    words = shlex.split(SHELL_END.split(" " + line + " ", maxsplit=1)[0], comments=True)
    words = [word for word in words if word not in ("...", "…")]
    assert words[0].endswith("deployer")
    if len(words) == 1 or words[1] in ("--help", "-h", "--version", "-V"):
        return
    name = words[1]
    assert name in COMMANDS, f"{page}: `{line}`: no command {name}"
    args = [word for word in words[2:] if not re.fullmatch(r"\[.*|.*\]|\|", word)]  # `[--flag X]` spans: optional
    try:
        _parser(COMMANDS[name]).parse_args(args)
    except ArgumentProblem as problem:
        if "required" in str(problem) and not any(not arg.startswith("-") for arg in args):
            return  # a positional left out of a prose mention (`deployer report`)
        raise AssertionError(f"{page}: `{line}`: {problem}") from None


def test_the_readmes_inventory_and_watch_examples_load(tmp_path):
    from deployer.inventory.load import parse_inventory  # noqa: PLC0415

    readme = (REPO / "README.md").read_text()
    example, watch = [body for language, body in FENCE.findall(readme) if language == "yaml"]
    (tmp_path / "deploy.known_hosts").write_text("")
    key = tmp_path / "id_ed25519"
    key.write_text("")
    inventory = parse_inventory(example.replace("~/.ssh/id_ed25519", str(key)), str(tmp_path / "deploy.yml"))
    assert [host.name for host in inventory.hosts] == ["web1", "web2"]
    watched = parse_inventory(example.replace("~/.ssh/id_ed25519", str(key)) + watch, str(tmp_path / "deploy.yml"))
    assert watched.watch is not None and [check.kind for check in watched.watch.checks] == ["prometheus"]
