"""The baseline the platform replaces: a plain pandas script over the same raw files, written the
way a notebook would be. `python bench/baseline_pandas.py <inbox dir>` prints one JSON line with
its step times, rows and the model's validation MAE.

Same work as the platform's main path: parse both meter vendors (local time with DST, decimal
comma; epoch ms, Wh, a renamed field), drop bad values and duplicates, resolve meters to customers
through both CRM exports, add weather (Fahrenheit converted) and net tariff prices, build the
energy_forecast features and fit LightGBM on all but the last 14 days. Files that do not parse are
skipped, as a notebook author would after the first crash. No landing, lineage, checks, rejects
with reasons, pseudonymization, or incremental runs: that is the point of the comparison.
"""

from __future__ import annotations

import glob
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

TZ = "Europe/Warsaw"
VAT_RATE, VAT_EXCLUDED_FROM = 0.23, "2024-03"  # as in the sample project's sources/tariffs.yaml
timings: dict[str, float] = {}


def timed(name):
    def wrap(fn):
        def run(*args):
            started = time.perf_counter()
            result = fn(*args)
            timings[name] = round(time.perf_counter() - started, 2)
            return result

        return run

    return wrap


def meter_id(values: pd.Series) -> pd.Series:
    digits = values.astype(str).str.strip().str.upper().str.extract(r"^(?:MTR-?)?(\d{1,6})$")[0]
    return "MTR-" + digits.str.zfill(6)


@timed("vendor_a")
def vendor_a(inbox: Path) -> pd.DataFrame:
    frames = []
    for path in sorted(glob.glob(str(inbox / "meters_vendor_a" / "*.csv"))):
        try:
            frame = pd.read_csv(path, sep=";", dtype=str, on_bad_lines="skip")
            frame = frame[["meter_id", "timestamp", "consumption_kwh"]]
        except Exception:
            continue
        local = pd.to_datetime(frame["timestamp"], format="%Y-%m-%d %H:%M", errors="coerce")
        # The repeated autumn hour: the first occurrence per meter is summer time.
        second = local.groupby([frame["meter_id"], local]).cumcount().to_numpy() > 0
        frame["utc"] = local.dt.tz_localize(TZ, ambiguous=~second, nonexistent="NaT").dt.tz_convert(
            "UTC"
        )
        frame["meter_id"] = meter_id(frame["meter_id"])
        frame["kwh"] = pd.to_numeric(
            frame["consumption_kwh"].str.replace(",", ".", regex=False), errors="coerce"
        )
        frames.append(frame[["meter_id", "utc", "kwh"]].assign(vendor="a"))
    return pd.concat(frames, ignore_index=True)


@timed("vendor_b")
def vendor_b(inbox: Path) -> pd.DataFrame:
    frames = []
    for path in sorted(glob.glob(str(inbox / "meters_vendor_b" / "*.jsonl"))):
        try:
            frame = pd.read_json(path, lines=True, dtype=False)
        except Exception:
            continue
        if "energy_wh" in frame:
            frame["wh"] = frame.get("wh", pd.Series(np.nan, index=frame.index)).fillna(
                frame["energy_wh"]
            )
        frame["meter_id"] = meter_id(frame["meter"])
        ts = pd.to_numeric(frame["ts"], errors="coerce")
        frame["utc"] = pd.to_datetime(ts, unit="ms", utc=True)
        frame["kwh"] = pd.to_numeric(frame["wh"], errors="coerce") / 1000
        frames.append(frame[["meter_id", "utc", "kwh"]].assign(vendor="b"))
    return pd.concat(frames, ignore_index=True)


@timed("clean_readings")
def clean(readings: pd.DataFrame) -> pd.DataFrame:
    readings = readings.dropna(subset=["meter_id", "utc", "kwh"])
    readings = readings[(readings["kwh"] >= 0) & (readings["kwh"] <= 20)]
    readings = readings.sort_values(["meter_id", "utc", "vendor"])
    return readings.drop_duplicates(["meter_id", "utc"], keep="last")


@timed("customers")
def customers(inbox: Path) -> pd.DataFrame:
    frames = []
    for path in sorted(glob.glob(str(inbox / "customers" / "*.csv"))):
        frame = pd.read_csv(path, dtype=str)
        if "CustomerNo" in frame:
            frame = frame.rename(columns={"MeterNo": "meter_id", "Region": "region",
                                          "TariffPlan": "tariff", "CustomerNo": "customer_id"})  # fmt: skip
        frames.append(frame[["customer_id", "meter_id", "region", "tariff"]])
    frame = pd.concat(frames, ignore_index=True)
    frame["meter_id"] = meter_id(frame["meter_id"])
    frame["region"] = frame["region"].str.strip().str.lower()
    frame["tariff"] = frame["tariff"].str.strip().str.upper()
    return frame.dropna(subset=["meter_id"]).drop_duplicates("meter_id")


@timed("weather")
def weather(inbox: Path) -> pd.DataFrame:
    rows = []
    for path in sorted(glob.glob(str(inbox / "weather" / "*.json"))):
        try:
            document = json.loads(Path(path).read_text())
        except Exception:
            continue
        fahrenheit = document.get("units", {}).get("temperature") == "F"
        for o in document.get("observations", []):
            t = o.get("temperature")
            if isinstance(t, (int, float)):
                rows.append((o["region"], o["time"][:10], (t - 32) * 5 / 9 if fahrenheit else t))
    frame = pd.DataFrame(rows, columns=["region", "day", "temperature"])
    frame["day"] = pd.to_datetime(frame["day"])
    return frame.groupby(["region", "day"], as_index=False)["temperature"].mean()


@timed("tariffs")
def tariffs(inbox: Path) -> pd.DataFrame:
    frames = []
    for path in sorted(glob.glob(str(inbox / "tariffs" / "*.csv"))):
        try:
            frames.append(pd.read_csv(path, dtype={"month": str}))
        except Exception:
            continue
    frame = pd.concat(frames).drop_duplicates(["tariff", "month"], keep="last")
    gross = frame["month"] < VAT_EXCLUDED_FROM
    frame["price"] = np.where(
        gross, frame["price_pln_per_kwh"] / (1 + VAT_RATE), frame["price_pln_per_kwh"]
    )
    frame["month"] = pd.to_datetime(frame["month"])
    return frame[["tariff", "month", "price"]]


@timed("join_daily")
def daily(readings, customers, weather, tariffs) -> pd.DataFrame:
    readings = readings.assign(day=readings["utc"].dt.tz_localize(None).dt.normalize())
    days = readings.groupby(["meter_id", "day"]).agg(kwh=("kwh", "sum"), n=("kwh", "size"))
    days = days[days["n"] >= 40].reset_index()
    days["kwh"] = days["kwh"] * 48 / days["n"]
    frame = days.merge(customers, on="meter_id").merge(weather, on=["region", "day"], how="left")
    frame["month"] = frame["day"].dt.to_period("M").dt.to_timestamp()
    return frame.merge(tariffs, on=["tariff", "month"], how="left")


@timed("features")
def features(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.sort_values(["meter_id", "day"]).set_index("day")
    full = []
    for meter, part in frame.groupby("meter_id"):  # the notebook way: one customer at a time
        part = part.asfreq("D")
        part["meter_id"] = meter
        part[["region", "tariff", "price"]] = part[["region", "tariff", "price"]].ffill()
        full.append(part)
    frame = pd.concat(full).reset_index()
    g = frame.groupby("meter_id")["kwh"]
    frame["lag_1"] = frame["kwh"]
    frame["lag_2"] = g.shift(1)
    frame["lag_7"] = g.shift(6)
    frame["mean_7"] = g.transform(lambda s: s.rolling(7, min_periods=5).mean())
    frame["mean_28"] = g.transform(lambda s: s.rolling(28, min_periods=20).mean())
    frame["temperature_3d"] = frame.groupby("meter_id")["temperature"].transform(
        lambda s: s.rolling(3, min_periods=1).mean()
    )
    frame["weekday"] = (frame["day"] + pd.Timedelta(days=1)).dt.weekday
    frame["region_code"] = frame["region"].astype("category").cat.codes
    frame["tariff_code"] = frame["tariff"].astype("category").cat.codes
    frame["label"] = g.shift(-1)
    return frame.dropna(subset=["mean_28", "lag_7", "label"])


FEATURES = ["lag_1", "lag_2", "lag_7", "mean_7", "mean_28", "temperature", "temperature_3d",
            "weekday", "price", "region_code", "tariff_code"]  # fmt: skip


@timed("lightgbm")
def fit(frame: pd.DataFrame) -> float:
    import lightgbm as lgb

    cut = frame["day"].max() - pd.Timedelta(days=14)
    train, valid = frame[frame["day"] <= cut - pd.Timedelta(days=1)], frame[frame["day"] > cut]
    params = {"objective": "regression_l1", "learning_rate": 0.05, "num_leaves": 15,
              "min_data_in_leaf": 40, "verbose": -1, "num_threads": 2, "seed": 7}  # fmt: skip
    booster = lgb.train(params, lgb.Dataset(train[FEATURES], train["label"]), 400)
    return float(np.mean(np.abs(booster.predict(valid[FEATURES]) - valid["label"])))


def main(inbox: Path) -> dict:
    started = time.perf_counter()
    readings = clean(pd.concat([vendor_a(inbox), vendor_b(inbox)], ignore_index=True))
    frame = daily(readings, customers(inbox), weather(inbox), tariffs(inbox))
    mae = fit(features(frame))
    import resource

    return {
        "seconds": round(time.perf_counter() - started, 2),
        "steps": timings,
        "readings": len(readings),
        "mae": round(mae, 4),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 2),
        "pid": os.getpid(),
    }


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
