"""``dp sample-data``: realistic raw files of a fictional energy utility, with known problems.

Deterministic per seed. Writes into ``<data_dir>/inbox/<source>/`` and, beside the inbox, a
manifest of the ground truth: every file with its record count, every injected row problem with its
file and record number, the file-level problems, duplicate deliveries, late files, readings dropped
to make gaps, meters no customer owns, and the people behind the CRM records.

File modification times are set to when each file would have arrived (the morning after the day it
covers; a late file several days later), so arrival order in the landing is realistic.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json
import os
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from dp_projects.utility.sample_data.people import CHURN_DECLINE_DAYS, People, make_people
from dp_projects.utility.model import REGIONS

# What the raw files say, as the sources' declarations read it: vendor A's wall clock, and the
# VAT the tariff price lists include before they switch to net prices.
TIME_ZONE = "Europe/Warsaw"
VAT_RATE, VAT_EXCLUDED_FROM = 0.23, dt.date(2024, 4, 1)
PROVIDERS = {"meteo": ("C", ("north", "south", "east")), "skycast": ("F", ("west", "central"))}
ROW_PROBLEM_RATES = {  # share of readings per vendor
    "null_value": 0.002,
    "negative_value": 0.0005,
    "absurd_value": 0.0005,
    "bad_timestamp": 0.0005,
    "duplicate_row": 0.002,
}
DROP_RATE = 0.001  # readings never delivered: they show up as gaps
MIGRATING_SHARE = 0.05  # vendor A meters moved to vendor B, both reporting for OVERLAP_DAYS
OVERLAP_DAYS = 2
SCHEMA_DRIFT_AT = 0.6  # vendor B renames 'wh' to 'energy_wh' after this share of the days
UNKNOWN_METER = "999999"
EXPECTED_REASON = {  # what the rejects must say for each injected row problem
    "null_value": "missing value",
    "negative_value": "greater_than_or_equal_to",
    "absurd_value": "less_than_or_equal_to",
    "bad_timestamp": "cannot parse",
    "duplicate_row": "duplicate of record",
    "bad_contract_dates": "contract_end before contract_start",
}
EXPECTED_QUARANTINE = {
    "wrong_delimiter": "missing declared columns",
    "truncated_json": "invalid JSON",
    "binary_garbage": "binary content",
    "empty_file": "empty file",
}


@dataclass(frozen=True)
class SampleParams:
    days: int = 120
    meters: int = 200
    seed: int = 7
    start: dt.date = dt.date(2024, 1, 15)
    # Large worlds are written in parts of ``meters`` each (part k: meters k*meters+1 on), so
    # memory is one part's. Files of part k > 0 are named ``<name>_p<k>``; weather and tariffs
    # are written once, by part 0.
    part: int = 0


@dataclass
class Manifest:
    params: dict
    files: list[dict] = field(default_factory=list)
    row_problems: list[dict] = field(default_factory=list)
    file_problems: list[dict] = field(default_factory=list)
    duplicate_deliveries: list[dict] = field(default_factory=list)
    dropped_readings: list[dict] = field(default_factory=list)
    unknown_meters: list[str] = field(default_factory=list)  # readings of meters no CRM lists
    # Meters whose only CRM record is rejected: their readings have no known owner.
    orphaned_meters: list[str] = field(default_factory=list)
    migrating_meters: list[str] = field(default_factory=list)
    people: list[dict] = field(default_factory=list)


def part_name(name: str, part: int) -> str:
    """The file name for a part: ``name`` itself for part 0, ``<stem>_p<part>.<suffix>`` else."""
    stem, dot, suffix = name.rpartition(".")
    if not part or stem.endswith(f"_p{part}"):
        return name
    return f"{stem}_p{part}{dot}{suffix}"


class Writer:
    """Writes files into the inbox with their arrival time and records them in the manifest."""

    def __init__(self, inbox: Path, manifest: Manifest, progress=None, part: int = 0):
        self.inbox, self.manifest, self.progress, self.part = inbox, manifest, progress, part

    def named(self, name: str) -> str:
        return part_name(name, self.part)

    def write(self, source: str, name: str, data: bytes, arrival: dt.datetime, records: int | None,
              kind: str = "data", late: bool = False) -> Path:  # fmt: skip
        name = self.named(name)
        path = self.inbox / source / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        stamp = arrival.timestamp()
        os.utime(path, (stamp, stamp))
        if self.progress is not None:
            self.progress.update(1)
        self.manifest.files.append(
            {
                "source": source,
                "name": name,
                "records": records,
                "kind": kind,
                "late": late,
                "arrival": arrival.isoformat(),
            }  # fmt: skip
        )
        return path

    def redeliver(
        self, source: str, name: str, copy_of: str, data: bytes, arrival: dt.datetime, records: int
    ) -> None:
        """The same content again under another name: the landing must recognise it."""
        self.write(source, name, data, arrival, records, kind="duplicate_delivery")
        self.manifest.duplicate_deliveries.append(
            {"source": source, "file": self.named(name), "copy_of": self.named(copy_of)}
        )

    def malformed(
        self, source: str, name: str, data: bytes, arrival: dt.datetime, problem: str
    ) -> None:
        """A file the formatted zone must quarantine, with a reason matching ``problem``."""
        self.write(source, name, data, arrival, None, kind="malformed")
        self.manifest.file_problems.append(
            {"source": source, "file": self.named(name), "kind": problem}
        )


def generate(
    data_dir: Path, params: SampleParams = SampleParams(), progress: bool = False
) -> Manifest:
    """Write the sample files into ``data_dir/inbox`` and the ground truth beside it.

    ``progress`` shows a bar of the files written on stderr (the CLI turns it on in a terminal).
    """
    from tqdm import tqdm

    rng = np.random.default_rng([params.seed, params.part] if params.part else params.seed)
    manifest = Manifest(params={**asdict(params), "start": params.start.isoformat()})
    # About two meter files and two weather files a day, plus the CRM exports and tariffs.
    expected = 4 * params.days + params.days // 28 + 12
    bar = tqdm(total=expected, unit="file", desc="sample files", disable=not progress)
    writer = Writer(Path(data_dir) / "inbox", manifest, bar, params.part)
    people = make_people(
        rng, params.meters, params.start, params.days, offset=params.part * params.meters
    )
    if params.part:  # the world's one weather: part 0's, replayed from the same seed
        replay = np.random.default_rng(params.seed)
        make_people(replay, params.meters, params.start, params.days)
        weather = make_weather(replay, params.start, params.days)
    else:
        weather = make_weather(rng, params.start, params.days)
    readings = make_readings(rng, people, weather, params, manifest)
    late_days = set(rng.choice(params.days - 2, size=min(3, params.days - 2), replace=False) + 1)

    write_vendor_a(rng, readings.filter(pl.col("vendor") == "a"), writer, params, late_days)
    write_vendor_b(rng, readings.filter(pl.col("vendor") == "b"), writer, params, late_days)
    if params.part == 0:
        write_weather(rng, weather, writer, params)
    write_customers(rng, people, writer, params)
    if params.part == 0:
        write_tariffs(writer, params)
    manifest.people = people.frame.select(
        "first_name", "last_name", "email", "street", "meter_id"
    ).to_dicts()
    path = Path(data_dir) / writer.named("sample_data_manifest.json")
    path.write_text(json.dumps(asdict(manifest), indent=1, default=str, ensure_ascii=False))
    bar.close()
    return manifest


# --- the world ------------------------------------------------------------------------------------


def _utc(day: dt.date, hours: float = 0) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), dt.UTC) + dt.timedelta(hours=hours)


REGION_OFFSET_C = dict(zip(REGIONS, (-2.0, 2.0, -1.0, 1.0, 0.0)))
# A day keeps this share of the day before's departure from the seasonal norm: weather systems
# that last several days and then fade. Daily shocks of 1.2 C give departures of about 2.3 C
# (standard deviation) and day-to-day changes of about 1.25 C. A random walk drifts without bound:
# over a year a region's temperature went tens of degrees off any plausible climate, and the
# energy forecast, validated on the last days, had to extrapolate.
PERSISTENCE = 0.85


def seasonal_norm_c(day_of_year: np.ndarray, region: str) -> np.ndarray:
    """A region's normal daily mean temperature (C) on these days of the year: 8 C over the year,
    -3 C at its coldest (20 January), 19 C at its warmest (late July), plus the region's offset."""
    return 8 - 11 * np.cos(2 * np.pi * (day_of_year - 20) / 365) + REGION_OFFSET_C[region]


def departures_c(rng: np.random.Generator, days: int) -> np.ndarray:
    """Each day's departure (C) from the seasonal norm: an AR(1) process, each day ``PERSISTENCE``
    of the day before's plus a fresh shock, so it stays within a plausible climate."""
    shocks = rng.normal(0, 1.2, days)
    departure, level = np.empty(days), 0.0
    for day, shock in enumerate(shocks):
        level = PERSISTENCE * level + shock
        departure[day] = level
    return departure


def make_weather(rng: np.random.Generator, start: dt.date, days: int) -> pl.DataFrame:
    """Hourly temperature (C) and humidity per region: seasonal norm, departure, day cycle."""
    hours = pl.datetime_range(
        _utc(start), _utc(start, 24 * days - 1), "1h", time_zone="UTC", eager=True
    )
    frames = []
    for region in REGIONS:
        doy = hours.dt.ordinal_day().to_numpy()
        hour = hours.dt.hour().to_numpy()
        temp = (
            seasonal_norm_c(doy, region)
            + np.repeat(departures_c(rng, days), 24)
            - 4 * np.cos(2 * np.pi * (hour - 3) / 24)
        )
        frames.append(
            pl.DataFrame(
                {
                    "region": region,
                    "utc": hours,
                    "temp_c": temp.round(1),
                    "humidity": rng.uniform(45, 98, len(hours)).round(0),
                }
            )  # fmt: skip
        )
    return pl.concat(frames)


def make_readings(
    rng, people: People, weather: pl.DataFrame, params: SampleParams, manifest: Manifest
) -> pl.DataFrame:
    """Half-hourly kWh per meter: daily profile, weekends, heating when cold, churners fading out."""
    start, days = params.start, params.days
    slots = pl.datetime_range(
        _utc(start), _utc(start, 24 * days - 0.5), "30m", time_zone="UTC", eager=True
    )
    daily_temp = weather.group_by("region", pl.col("utc").dt.date().alias("day")).agg(
        pl.col("temp_c").mean().alias("day_temp")
    )
    frame = (
        people.frame.select(
            "meter_id", "region", "vendor", "base_kwh", "contract_start", "contract_end"
        )
        .join(pl.DataFrame({"utc": slots}), how="cross")
        .with_columns(
            day=pl.col("utc").dt.date(),
            local_hour=pl.col("utc").dt.convert_time_zone(TIME_ZONE).dt.hour(),
        )
        .filter(
            (pl.col("day") >= pl.col("contract_start"))
            & (pl.col("contract_end").is_null() | (pl.col("day") <= pl.col("contract_end")))
        )
        .join(daily_temp, on=["region", "day"], how="left")
    )
    hour = frame["local_hour"].cast(pl.Float64).to_numpy()  # int8 from polars would overflow below
    profile = (
        0.6
        + 0.5 * np.exp(-((hour - 8) ** 2) / 4)
        + 0.9 * np.exp(-((hour - 19) ** 2) / 6)
        - 0.3 * ((hour >= 1) & (hour <= 5))
    )
    weekend = np.where(frame["day"].dt.weekday().to_numpy() >= 6, 1.12, 1.0)
    heating = 1 + 0.035 * np.clip(15 - frame["day_temp"].to_numpy(), 0, None)
    days_left = (frame["contract_end"] - frame["day"]).dt.total_days().fill_null(10_000).to_numpy()
    fading = np.clip(0.55 + 0.45 * days_left / CHURN_DECLINE_DAYS, 0.55, 1.0)
    noise = rng.lognormal(0, 0.25, frame.height)
    kwh = frame["base_kwh"].to_numpy() * profile * weekend * heating * fading * noise
    frame = frame.select("meter_id", "vendor", "utc", "day").with_columns(
        kwh=pl.Series(np.round(kwh, 3))
    )

    # A few vendor A meters migrate to vendor B; both vendors report them for a couple of days.
    a_meters = frame.filter(pl.col("vendor") == "a")["meter_id"].unique().sort()
    migrating = rng.choice(
        a_meters.to_numpy(), size=max(1, int(len(a_meters) * MIGRATING_SHARE)), replace=False
    )
    switch = {
        m: start
        + dt.timedelta(days=int(rng.integers(days // 3, max(days // 3 + 1, 2 * days // 3))))
        for m in migrating
    }
    manifest.migrating_meters = sorted(switch)
    switch_day = pl.col("meter_id").replace_strict(switch, default=None, return_dtype=pl.Date)
    moved = frame.filter(switch_day.is_not_null() & (pl.col("day") >= switch_day)).with_columns(
        vendor=pl.lit("b")
    )
    frame = pl.concat([
        frame.filter(switch_day.is_null() | (pl.col("day") < switch_day + dt.timedelta(days=OVERLAP_DAYS))),
        moved,
    ])  # fmt: skip
    # Readings of a meter no customer owns (a meter swapped in the field, not yet in the CRM).
    unknown = (
        frame.filter(pl.col("meter_id") == frame["meter_id"][0])
        .head(96 if params.part == 0 else 0)  # once, in part 0
        .with_columns(meter_id=pl.lit(f"MTR-{UNKNOWN_METER}"), vendor=pl.lit("b"))
    )
    manifest.unknown_meters = [f"MTR-{UNKNOWN_METER}"] if params.part == 0 else []
    return pl.concat([frame, unknown]).sort("meter_id", "utc", "vendor")


# --- row problems ---------------------------------------------------------------------------------


def assign_problems(
    rng, frame: pl.DataFrame, rates: dict[str, float], drop_rate: float = 0.0
) -> pl.DataFrame:
    """Mark disjoint random rows with a problem kind (or ``drop``); null where the row is clean."""
    n = frame.height
    order = rng.permutation(n)
    kinds = [*rates, "drop"]
    codes = np.full(n, -1, dtype=np.int8)  # an index into kinds; a Python object per row is slow
    taken = 0
    for code, rate in enumerate([*rates.values(), drop_rate]):
        count = int(round(n * rate))
        codes[order[taken : taken + count]] = code
        taken += count
    problem = pl.Series(codes).replace_strict(
        dict(enumerate(kinds)), default=None, return_dtype=pl.String
    )
    return frame.with_columns(problem=problem)


def finish_rows(
    frame: pl.DataFrame, manifest: Manifest, source: str, first_record: int
) -> pl.DataFrame:
    """Drop the 'drop' rows (recorded as gaps), duplicate the 'duplicate_row' ones right after."""
    dropped = frame.filter(pl.col("problem") == "drop")
    manifest.dropped_readings += dropped.select(
        "meter_id", pl.col("utc").dt.strftime("%Y-%m-%dT%H:%M:%SZ").alias("reading_start")
    ).to_dicts()
    kept = frame.filter((pl.col("problem") != "drop") | pl.col("problem").is_null())
    copies = kept.filter(pl.col("problem") == "duplicate_row").with_columns(copy=pl.lit(1))
    kept = kept.with_columns(
        copy=pl.lit(0), problem=pl.when(pl.col("problem") != "duplicate_row").then("problem")
    )
    return (
        pl.concat([kept, copies])
        .sort("file", "meter_id", "utc", "copy")
        .with_columns(record_no=pl.int_range(pl.len()).over("file") + first_record)
    )


def record_problems(frame: pl.DataFrame, writer: Writer, source: str) -> None:
    problems = frame.filter(pl.col("problem").is_not_null()).select(
        pl.lit(source).alias("source"), "file", "record_no", pl.col("problem").alias("kind")
    )
    names = {name: writer.named(name) for name in problems["file"].unique()}
    writer.manifest.row_problems += problems.with_columns(
        pl.col("file").replace_strict(names)
    ).to_dicts()


def per_file(frame: pl.DataFrame, day: str):
    """(file name, day, its lines joined and terminated, records) per file, in order: the text
    is built by polars, in parallel, not line by line in Python."""
    files = frame.group_by("file", maintain_order=True).agg(
        pl.col(day).first(), (pl.col("line").str.join("\n") + "\n").alias("text"), pl.len()
    )
    return files.iter_rows()


def arrival_for(day: dt.date, late: bool) -> dt.datetime:
    return _utc(day + dt.timedelta(days=6 if late else 1), 6)


# --- writers per source ---------------------------------------------------------------------------


def write_vendor_a(
    rng, readings: pl.DataFrame, writer: Writer, params: SampleParams, late_days: set
) -> None:
    local = pl.col("utc").dt.convert_time_zone(TIME_ZONE)
    frame = assign_problems(rng, readings, ROW_PROBLEM_RATES, DROP_RATE).with_columns(
        file=local.dt.strftime("readings_%Y-%m-%d.csv"), local_day=local.dt.date()
    )
    # In the repeated autumn hour a duplicated row cannot be told from the repeat itself (the
    # format has no offset), so no duplicates are injected there.
    repeated_hour = (
        local.dt.replace_time_zone(None).dt.replace_time_zone(TIME_ZONE, ambiguous="null").is_null()
    )
    frame = frame.with_columns(
        problem=pl.when((pl.col("problem") == "duplicate_row") & repeated_hour)
        .then(None)
        .otherwise("problem")
    )
    frame = finish_rows(frame, writer.manifest, "meters_vendor_a", first_record=2)
    value = pl.col("kwh").cast(pl.String).str.replace(".", ",", literal=True)
    problem = pl.col("problem")
    frame = frame.with_columns(
        line=pl.concat_str(
            pl.col("meter_id"),
            pl.when(problem == "bad_timestamp").then(local.dt.strftime("%d/%m/%Y %H:%M")).otherwise(local.dt.strftime("%Y-%m-%d %H:%M")),
            pl.when(problem == "null_value").then(pl.lit(""))
            .when(problem == "negative_value").then(pl.concat_str(pl.lit("-"), value, pl.lit("5")))
            .when(problem == "absurd_value").then(pl.lit("9999,5"))
            .otherwise(value),
            separator=";",
        )
    )  # fmt: skip
    record_problems(frame, writer, "meters_vendor_a")
    header = "meter_id;timestamp;consumption_kwh\n"
    first_day = None
    for name, day, lines, records in per_file(frame, "local_day"):
        late = (day - params.start).days in late_days
        text = header + lines
        writer.write(
            "meters_vendor_a", name, text.encode(), arrival_for(day, late), records, late=late
        )
        first_day = first_day or (name, text, day)
    name, text, day = first_day
    # A re-delivery of the first day under another name, and a re-send with the wrong delimiter.
    copy = name.replace(".csv", " (1).csv")
    writer.redeliver(
        "meters_vendor_a", copy, name, text.encode(), arrival_for(day, True), text.count("\n") - 1
    )
    resend = name.replace(".csv", "_resend.csv")
    writer.malformed(
        "meters_vendor_a",
        resend,
        text.replace(";", ",").encode(),
        arrival_for(day, True),
        "wrong_delimiter",
    )


def write_vendor_b(
    rng, readings: pl.DataFrame, writer: Writer, params: SampleParams, late_days: set
) -> None:
    drift_day = params.start + dt.timedelta(days=int(params.days * SCHEMA_DRIFT_AT))
    frame = assign_problems(rng, readings, ROW_PROBLEM_RATES, DROP_RATE).with_columns(
        file=pl.col("utc").dt.strftime("%Y%m%d.jsonl")
    )
    frame = finish_rows(frame, writer.manifest, "meters_vendor_b", first_record=1)
    problem = pl.col("problem")
    wh = (pl.col("kwh") * 1000).round(0).cast(pl.Int64).cast(pl.String)
    frame = frame.with_columns(
        line=pl.concat_str(
            pl.lit('{"meter": "'),
            pl.col("meter_id").str.replace("MTR-", "", literal=True),
            pl.lit('", "ts": '),
            pl.when(problem == "bad_timestamp").then(pl.concat_str(pl.lit('"'), pl.col("utc").dt.strftime("%Y-%m-%dT%H:%M"), pl.lit('"')))
            .otherwise(pl.col("utc").dt.epoch("ms").cast(pl.String)),
            pl.when(pl.col("day") >= drift_day).then(pl.lit(', "energy_wh": ')).otherwise(pl.lit(', "wh": ')),
            pl.when(problem == "null_value").then(pl.lit("null"))
            .when(problem == "negative_value").then(pl.concat_str(pl.lit("-"), wh, pl.lit("7")))
            .when(problem == "absurd_value").then(pl.lit("99999999"))
            .otherwise(wh),
            pl.lit("}"),
        )
    )  # fmt: skip
    record_problems(frame, writer, "meters_vendor_b")
    first = None
    for name, day, lines, records in per_file(frame, "day"):
        late = (day - params.start).days in late_days
        writer.write(
            "meters_vendor_b", name, lines.encode(), arrival_for(day, late), records, late=late
        )
        first = first or (name, day)
    garbage = first[0].replace(".jsonl", "_corrupt.jsonl")
    noise = bytes(rng.integers(0, 256, 4096, dtype=np.uint8))
    writer.malformed(
        "meters_vendor_b", garbage, noise, arrival_for(first[1], True), "binary_garbage"
    )


def write_weather(rng, weather: pl.DataFrame, writer: Writer, params: SampleParams) -> None:
    frame = assign_problems(rng, weather, {"null_value": 0.003})
    for day_index in range(params.days):
        day = params.start + dt.timedelta(days=day_index)
        for provider, (unit, regions) in PROVIDERS.items():
            part = frame.filter(
                (pl.col("utc").dt.date() == day) & pl.col("region").is_in(regions)
            ).sort("region", "utc")
            temp = part["temp_c"] if unit == "C" else (part["temp_c"] * 9 / 5 + 32).round(1)
            observations = [
                {"region": r, "time": t.strftime("%Y-%m-%dT%H:%M:%SZ"), "temperature": None if p == "null_value" else v, "humidity": h}
                for r, t, v, h, p in zip(part["region"], part["utc"], temp, part["humidity"], part["problem"])
            ]  # fmt: skip
            name = f"{provider}_{day:%Y-%m-%d}.json"
            document = json.dumps({"provider": provider, "generated_at": _utc(day, 25).isoformat(), "units": {"temperature": unit}, "observations": observations}, indent=1)  # fmt: skip
            writer.write(
                "weather", name, document.encode(), arrival_for(day, False), len(observations)
            )
            writer.manifest.row_problems += [
                {"source": "weather", "file": name, "record_no": i, "kind": "null_value"}
                for i, p in enumerate(part["problem"]) if p == "null_value"
            ]  # fmt: skip
            if day_index == 0 and provider == "skycast":
                late = arrival_for(day, True)
                writer.redeliver(
                    "weather",
                    name.replace(".json", "_resent.json"),
                    name,
                    document.encode(),
                    late,
                    len(observations),
                )
                cut = document[: len(document) // 2].encode()
                writer.malformed(
                    "weather", name.replace(".json", "_partial.json"), cut, late, "truncated_json"
                )


def write_customers(rng, people: People, writer: Writer, params: SampleParams) -> None:
    export_day = params.start + dt.timedelta(days=params.days)
    frame = people.frame
    alpha = frame.filter(pl.col("membership") != "beta")
    beta = frame.filter(pl.col("membership") != "alpha")

    def render(rows: list[list], header: list[str]) -> bytes:
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows([header, *rows])
        return out.getvalue().encode()

    alpha_rows = [
        [f"ALP-{p['person']:06d}", f"{p['first_name']} {p['last_name']}", p["email"], p["street"], p["city"],
         p["region"], p["tariff"], p["meter_id"], p["contract_start"].isoformat(),
         p["contract_end"].isoformat() if p["contract_end"] else ""]
        for p in alpha.iter_rows(named=True)
    ]  # fmt: skip
    dup_at = int(rng.integers(0, len(alpha_rows)))
    alpha_rows.insert(dup_at + 1, list(alpha_rows[dup_at]))
    alpha_name = writer.named(f"crm_alpha_export_{export_day:%Y%m%d}.csv")
    writer.manifest.row_problems.append(
        {
            "source": "customers",
            "file": alpha_name,
            "record_no": dup_at + 3,
            "kind": "duplicate_row",
        }
    )
    writer.write("customers", alpha_name, render(alpha_rows, ["customer_id", "full_name", "email", "address", "city", "region", "tariff", "meter_id", "contract_start", "contract_end"]), _utc(export_day, 2), len(alpha_rows))  # fmt: skip

    beta_rows = []
    broken = set(rng.choice(beta.height, size=min(2, beta.height), replace=False).tolist())
    beta_name = writer.named(f"crm_beta_export_{export_day:%Y%m%d}.csv")
    for i, p in enumerate(beta.iter_rows(named=True)):
        start, end = p["contract_start"], p["contract_end"]
        if i in broken:  # a typo'd end date, years before the start
            end = start - dt.timedelta(days=400)
            writer.manifest.row_problems.append(
                {
                    "source": "customers",
                    "file": beta_name,
                    "record_no": i + 2,
                    "kind": "bad_contract_dates",
                }
            )
            if (
                p["membership"] == "beta"
            ):  # their only CRM record is rejected: the meter has no owner
                writer.manifest.orphaned_meters.append(p["meter_id"])
        email = p["email"].upper() if i % 3 == 0 else f" {p['email']} "
        beta_rows.append([
            str(700000 + p["person"]), f"{p['last_name'].upper()}, {p['first_name']}", email if i % 7 else "",
            p["street"].replace("ul. ", "ul."), p["city"], p["region"].upper(), p["tariff"].lower(),
            str(p["meter_no"]), f"{start:%d.%m.%Y}", f"{end:%d.%m.%Y}" if end else "",
        ])  # fmt: skip
    writer.write("customers", beta_name, render(beta_rows, ["CustomerNo", "Name", "E-mail", "Address", "City", "Region", "TariffPlan", "MeterNo", "StartDate", "EndDate"]), _utc(export_day, 3), len(beta_rows))  # fmt: skip


TARIFF_NET = {
    "G11": (0.62, 0.025),
    "G12": (0.55, 0.005),
    "G12W": (0.58, 0.005),
}  # base, monthly rise


def write_tariffs(writer: Writer, params: SampleParams) -> None:
    first = params.start.replace(day=1)
    last = params.start + dt.timedelta(days=params.days - 1)
    month, index = first, 0
    while month <= last:
        rows = []
        for tariff, (base, rise) in TARIFF_NET.items():
            price = base * (1 + rise) ** index
            if month < VAT_EXCLUDED_FROM:
                price *= 1 + VAT_RATE
            rows.append(f"{tariff},{month:%Y-%m},{price:.4f}")
        writer.write("tariffs", f"tariffs_{month:%Y-%m}.csv", ("tariff,month,price_pln_per_kwh\n" + "\n".join(rows) + "\n").encode(), _utc(month, 0), len(rows))  # fmt: skip
        month = (month + dt.timedelta(days=32)).replace(day=1)
        index += 1
    writer.malformed("tariffs", "tariffs_empty.csv", b"", _utc(first, 1), "empty_file")


def clear_inbox_tree(data_dir: Path) -> None:
    shutil.rmtree(Path(data_dir) / "inbox", ignore_errors=True)


def write_sample(data_dir: Path, argv: list[str]) -> str:
    """The project's ``sample_data`` hook: ``dp sample-data [options]`` calls it with its options."""
    parser = argparse.ArgumentParser(
        prog="dp sample-data",
        description="Write the sample utility's raw files (meters of two vendors, two CRMs, "
        "weather, tariffs, with known problems) into $DP_DATA_DIR/inbox. Example: "
        "dp sample-data --days 100 --meters 40 --seed 3",
    )
    parser.add_argument("--days", type=int, default=120, help="days of history (default 120)")
    parser.add_argument(
        "--meters", type=int, default=200, help="meters, one per customer (default 200)"
    )
    parser.add_argument(
        "--seed", type=int, default=7, help="random seed; same seed, same files (default 7)"
    )
    parser.add_argument(
        "--start",
        type=dt.date.fromisoformat,
        default=dt.date(2024, 1, 15),
        help="first day, YYYY-MM-DD (default 2024-01-15)",
    )
    parser.add_argument(
        "--part",
        type=int,
        default=0,
        help="write part N of a larger world: meters N*M+1 on, files named *_pN (default 0)",
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=sys.stderr.isatty(),
        help="show a progress bar (default: when stderr is a terminal)",
    )
    args = parser.parse_args(argv)
    if args.days < 3 or args.meters < 4:  # with fewer, vendor A may get no meter to migrate
        parser.error("--days must be at least 3 and --meters at least 4")
    manifest = generate(
        data_dir,
        SampleParams(args.days, args.meters, args.seed, args.start, args.part),
        progress=args.progress,
    )
    return (
        f"wrote {len(manifest.files)} files into {data_dir / 'inbox'} "
        f"({len(manifest.row_problems)} injected row problems, {len(manifest.file_problems)} "
        f"malformed files, {len(manifest.duplicate_deliveries)} duplicate deliveries); "
        f"ground truth in {data_dir / part_name('sample_data_manifest.json', args.part)}"
    )
