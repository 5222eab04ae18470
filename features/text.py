"""Text normalisation shared by every stage (features, enrichment, training, serving).

One function, so the text a vocabulary was counted on and the text a served
query is encoded from are normalised the same way.
"""
from __future__ import annotations

import re
import unicodedata

_WS = re.compile(r"\s+")


def normalize(text: str | None) -> str:
    """NFKC, case-fold, collapse whitespace runs to one space, strip. ``None`` → ``""``."""
    if not text:
        return ""
    return _WS.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()
