"""The landing manifest: one row per delivery, so every file ever received is accounted for."""

from __future__ import annotations

from typing import Optional

import pandera.polars as pa

from dp_assets.sources.schema import UtcTimestamp

UNKNOWN_SOURCE = "_unknown"


class Delivery(pa.DataFrameModel):
    source: str = pa.Field(description="Raw source (the inbox folder); _unknown for stray files")
    original_name: str = pa.Field(
        description="Path of the file inside its inbox folder, as delivered; bytes that are not "
        "UTF-8 are shown as \\xNN (original_name_hex then holds the exact name)"
    )
    size_bytes: int = pa.Field(ge=0, description="File size in bytes")
    sha256: str = pa.Field(
        str_length={"min_value": 64, "max_value": 64}, description="SHA-256 of the file content"
    )
    arrival_time: UtcTimestamp = pa.Field(
        description="When the file arrived in the inbox (mtime), UTC"
    )
    inbox_changed_ns: int = pa.Field(
        description="Inode change time of the inbox file, ns: set anew by every delivery (even one that "
        "keeps the mtime), so with the name it tells a new delivery from a file a crashed run left behind"
    )
    landed_at: UtcTimestamp = pa.Field(description="When the landing run took the file, UTC")
    landed_path: str = pa.Field(
        description="Immutable copy under the data dir (for a re-delivery: the first copy)"
    )
    redelivery: bool = pa.Field(
        description="True when identical content had already landed for this source"
    )
    quarantine_reason: Optional[str] = pa.Field(
        nullable=True, description="Set when the file was quarantined on arrival"
    )
    # Last, so a manifest from before the column gets it by ALTER TABLE in the same position.
    original_name_hex: Optional[str] = pa.Field(
        nullable=True,
        description="The name's raw bytes in hex when they are not valid UTF-8, else null: with "
        "original_name, every delivered name is kept exactly and no two are confused",
    )

    class Config:
        strict = True
