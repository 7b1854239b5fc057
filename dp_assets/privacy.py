"""Pseudonymization of PII with a keyed hash (HMAC-SHA256).

The same person yields the same pseudonym in every source, so entity resolution works on pseudonyms
and raw PII never leaves the persistent landing. Without the key the pseudonyms cannot be reversed
or recomputed from guessed values.
"""

from __future__ import annotations

import hashlib
import hmac

import polars as pl

PSEUDONYM_CHARS = 32  # 128 bits of the digest: collisions are out of reach at any customer count


def pseudonymize(values: pl.Series, key: bytes) -> pl.Series:
    """Keyed hash of each non-null value; nulls stay null."""

    def digest(value: str | None) -> str | None:
        if value is None:
            return None
        return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:PSEUDONYM_CHARS]

    return pl.Series(values.name, [digest(v) for v in values.to_list()], dtype=pl.String)
