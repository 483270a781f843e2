"""Text that came from hosts is data: made harmless for a terminal, a JSON reader or a log.

Used once, at the rendering boundary (`deployer.report.shown`), by every output form: the live
view, plain lines, JSON and the run log. Control characters other than newline and tab (C0, DEL,
C1), and the Unicode characters that reorder or break lines on a terminal (bidi controls, line and
paragraph separators), are shown escaped (`\\x1b`, `\\u202e`); very long text is cut, saying so.
"""

from __future__ import annotations

import re

MAX_TEXT = 20000  # characters of one shown string; the rest is replaced by a count
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\ufff9-\ufffb]")
_NAMED = {"\r": "\\r", "\x0b": "\\v", "\x0c": "\\f"}


def _escaped(match: re.Match[str]) -> str:
    char = match.group(0)
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def sanitize(text: str, limit: int = MAX_TEXT) -> str:
    """`text` with unsafe characters escaped and at most `limit` characters kept."""
    if len(text) > limit:
        text = text[:limit] + f"… [{len(text) - limit} more characters not shown]"
    return _UNSAFE.sub(_escaped, text)
