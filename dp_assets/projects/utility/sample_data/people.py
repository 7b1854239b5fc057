"""Fictional customers: names, contacts, contracts, and a learnable but noisy churn signal."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import polars as pl

from dp_projects.utility.model import REGIONS, TARIFFS

FIRST_NAMES = [
    "Anna", "Piotr", "Maria", "Krzysztof", "Katarzyna", "Andrzej", "Małgorzata", "Tomasz", "Agnieszka",
    "Paweł", "Barbara", "Michał", "Ewa", "Łukasz", "Zofia", "Jakub", "Joanna", "Marek", "Żaneta", "Jan",
]  # fmt: skip
LAST_NAMES = [
    "Nowak", "Kowalski", "Wiśniewski", "Wójcik", "Kowalczyk", "Kamiński", "Lewandowski", "Zieliński",
    "Szymański", "Woźniak", "Dąbrowski", "Kozłowski", "Jankowski", "Mazur", "Krawczyk", "Piotrowski",
]  # fmt: skip
STREETS = ["Lipowa", "Polna", "Leśna", "Słoneczna", "Krótka", "Szkolna", "Ogrodowa", "Łąkowa"]
CITIES = {
    "north": ["Gdańsk", "Gdynia"], "south": ["Kraków", "Katowice"], "east": ["Lublin", "Białystok"],
    "west": ["Poznań", "Szczecin"], "central": ["Warszawa", "Łódź"],
}  # fmt: skip
TARIFF_SHARES = [0.6, 0.25, 0.15]
CHURN_INTERCEPT = -1.5  # about one customer in six leaves over the window
CHURN_DECLINE_DAYS = 30  # consumption of a leaving customer fades over the last month


@dataclass(frozen=True)
class People:
    frame: pl.DataFrame  # one row per person with clear PII, contract, CRM membership, meter


def make_people(
    rng: np.random.Generator, n: int, start: dt.date, days: int, offset: int = 0
) -> People:
    """``n`` people numbered from ``offset`` (meters ``offset + 1`` on: another part's people
    never collide with these)."""
    first = rng.choice(FIRST_NAMES, n)
    last = rng.choice(LAST_NAMES, n)
    region = rng.choice(REGIONS, n)
    tariff = rng.choice(TARIFFS, n, p=TARIFF_SHARES)
    tenure_days = rng.integers(30, 2500, n)
    starts = [start - dt.timedelta(days=int(t)) for t in tenure_days]
    late_joiners = rng.random(n) < 0.08
    starts = [
        start + dt.timedelta(days=int(rng.integers(1, max(days // 2, 2)))) if j else s
        for s, j in zip(starts, late_joiners)
    ]
    # Churn is likelier on G11 (its price rises fastest), for short tenure and for small users.
    base_kwh = rng.lognormal(mean=np.log(0.2), sigma=0.45, size=n)
    logit = (
        CHURN_INTERCEPT + 1.0 * (tariff == "G11") - 0.0006 * tenure_days - 1.5 * (base_kwh - 0.2)
    )
    churn = rng.random(n) < 1 / (1 + np.exp(-logit))
    ends = [
        max(s, start) + dt.timedelta(days=int(rng.integers(14, max(days, 15)))) if c else None
        for s, c in zip(starts, churn)
    ]
    ends = [e if e is None or e < start + dt.timedelta(days=days) else None for e in ends]
    membership = rng.choice(["alpha", "beta", "both"], n, p=[0.55, 0.25, 0.2])
    frame = pl.DataFrame(
        {
            "person": np.arange(offset, offset + n),
            "first_name": first,
            "last_name": last,
            "email": [
                f"{f}.{l}{i}@example.com".lower()
                for i, (f, l) in enumerate(zip(first, last), start=offset)
            ],
            "street": [
                f"ul. {rng.choice(STREETS)} {rng.integers(1, 120)}/{rng.integers(1, 40)}"
                for _ in range(n)
            ],
            "city": [rng.choice(CITIES[r]) for r in region],
            "region": region,
            "tariff": tariff,
            "meter_no": np.arange(offset + 1, offset + n + 1),
            "contract_start": starts,
            "contract_end": pl.Series(ends, dtype=pl.Date),
            "membership": membership,
            "base_kwh": base_kwh,
            "vendor": np.where(rng.random(n) < 0.5, "a", "b"),
        }
    ).with_columns(meter_id=pl.format("MTR-{}", pl.col("meter_no").cast(pl.String).str.zfill(6)))
    return People(frame)
