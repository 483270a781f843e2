"""Secrets never shown: every value the inventory marks secret (and the key passphrase) is replaced
by *** in all output, also where it arrives transformed. A host's log tail joins lines with spaces
and is cut at 400 characters, so a multi-line secret (a PEM key) appears with its line breaks turned
into spaces, one line of it alone, or cut short. Matched: the whole value, the value with any
whitespace between its pieces, each piece of at least MIN_PIECE characters, and a prefix of such a
piece of at least MIN_PIECE characters wherever it appears (where a cut ended it)."""

from __future__ import annotations

import re
import threading

REDACTED = "***"
MIN_PIECE = 8  # shorter pieces of a secret are too common to redact on their own


class Redactor:
    """The secrets of this process, and text with them redacted."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._pieces: list[str] = []
        self._lock = threading.Lock()

    def add(self, values: list[str]) -> None:
        """Values of at least 3 characters are redacted from now on."""
        with self._lock:
            self._values.update(value for value in values if len(value) >= 3)
            alternatives: set[str] = set()
            pieces: set[str] = set()
            for value in self._values:
                alternatives.add(re.escape(value))
                parts = value.split()
                if len(parts) > 1:
                    alternatives.add(r"\s+".join(re.escape(part) for part in parts))
                pieces.update(part for part in parts if len(part) >= MIN_PIECE)
            alternatives.update(re.escape(piece) for piece in pieces)
            ordered = sorted(alternatives, key=len, reverse=True)
            self._pattern = re.compile("|".join(ordered)) if ordered else None
            self._pieces = sorted(pieces, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        pattern, pieces = self._pattern, self._pieces
        if pattern is None:
            return text
        text = pattern.sub(REDACTED, text)
        for piece in pieces:  # a piece cut short: its first MIN_PIECE characters, and as far as it matches
            start = text.find(piece[:MIN_PIECE])
            while start != -1:
                end = start + MIN_PIECE
                while end < len(text) and end - start < len(piece) and text[end] == piece[end - start]:
                    end += 1
                text = text[:start] + REDACTED + text[end:]
                start = text.find(piece[:MIN_PIECE], start + len(REDACTED))
        return text
