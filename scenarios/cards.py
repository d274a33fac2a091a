"""A seeded generator of realistic card-transaction batches, and the demo scenario.

The world: customers with a home country, a typical spend and a preferred channel; merchants
with a category; transactions through the week with a daily rhythm. Fraud is rare and more
likely for large amounts relative to the customer's habit, online payments, foreign countries,
risky categories and night hours. After the scenario's shift, the merchant mix moves to gaming
and crypto, amounts grow, wallets take over, and a new fraud pattern appears (wallet payments
at crypto and gaming merchants) that a model trained before the shift has never seen.

A holiday week is temporary: a rush of five times the volume and bigger baskets, and for one week the usual signs of
fraud mislead (big gift purchases and holiday travel abroad are legitimate; fraud is a gift-card scam of
ordinary amounts paid by wallet at gaming and crypto merchants). A model retrained on it learns that big
and foreign payments are safer than they are; the week after, the world is back to normal.

Every batch is a pure function of (seed, week index, scenario), so re-generating a batch gives
the same bytes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from pipelines.storage import Location

log = logging.getLogger(__name__)

CATEGORIES = ["grocery", "restaurants", "fuel", "travel", "electronics", "fashion", "health",
              "entertainment", "gaming", "crypto"]
CHANNELS = ["pos", "online", "wallet"]
COUNTRIES = ["US", "GB", "DE", "FR", "ES", "IT", "NL", "CA", "BR", "NG", "IN", "MX"]
_BASE_CATEGORY_MIX = [0.24, 0.16, 0.12, 0.06, 0.07, 0.1, 0.08, 0.1, 0.05, 0.02]
_SHIFT_CATEGORY_MIX = [0.14, 0.1, 0.08, 0.05, 0.09, 0.08, 0.05, 0.08, 0.17, 0.16]
_CATEGORY_AMOUNT = [45, 38, 55, 420, 310, 95, 60, 48, 35, 240]

BatchKind = Literal["normal", "shifted", "corrupted", "bad_rows", "holiday"]


@dataclass(frozen=True)
class BatchPlan:
    week: int            # 0-based week index from the scenario start
    kind: BatchKind
    note: str

    def interval(self, start: datetime) -> tuple[datetime, datetime]:
        s = start + timedelta(weeks=self.week)
        return s, s + timedelta(weeks=1)


@dataclass(frozen=True)
class Scenario:
    """The demo story, batch by batch. `train_after` = weeks after which a first model is trained."""
    start: datetime = datetime(2026, 1, 5, tzinfo=UTC)   # a Monday
    customers: int = 3000
    merchants: int = 400
    tx_per_week: int = 15000
    seed: int = 7
    batches: tuple[BatchPlan, ...] = field(default_factory=lambda: (
        BatchPlan(0, "normal", "stable period"),
        BatchPlan(1, "normal", "stable period"),
        BatchPlan(2, "normal", "stable period"),
        BatchPlan(3, "normal", "stable period; the first champion is trained after this batch"),
        BatchPlan(4, "normal", "stable period, scored by the champion"),
        BatchPlan(5, "corrupted", "upstream renamed `amount` to `amt` and sent absurd amounts: must be blocked"),
        BatchPlan(6, "bad_rows", "a few bad rows (negative amounts, unknown channel, null customer): quarantined"),
        BatchPlan(7, "holiday", "a holiday rush: 5x the volume, big gifts and trips abroad are legitimate, fraud is "
                                "a wallet gift-card scam: drift, email, a retrain the gate promotes"),
        BatchPlan(8, "normal", "the holiday is over: on the delayed labels the new champion is worse than the one it "
                               "replaced; the guardrail rolls it back"),
        BatchPlan(9, "shifted", "market shift: gaming/crypto merchants, bigger amounts, wallets, a new fraud pattern"),
        BatchPlan(10, "shifted", "shift continues"),
        BatchPlan(11, "shifted", "shift continues; an engineer tries a cheaper model that the gate must reject"),
        BatchPlan(12, "shifted", "shift continues"),
        BatchPlan(13, "shifted", "shift continues"),
    ))
    train_after: int = 3
    experiment_after: int = 11
    drill_after: int = 7          # the on-call drill: right after the holiday retrain is promoted

    def short(self, weeks: int) -> Scenario:
        """A shorter scenario for tests: the same story, fewer rows."""
        return Scenario(start=self.start, customers=self.customers // 3, merchants=self.merchants // 2,
                        tx_per_week=self.tx_per_week // 3, seed=self.seed,
                        batches=self.batches[:weeks], train_after=self.train_after,
                        experiment_after=self.experiment_after, drill_after=self.drill_after)


def _world(sc: Scenario) -> dict[str, np.ndarray]:
    import numpy as np

    rng = np.random.default_rng(sc.seed)
    n = sc.customers
    home = rng.choice(len(COUNTRIES), size=n, p=_country_mix())
    spend_scale = rng.lognormal(mean=0.0, sigma=0.5, size=n)
    activity = rng.gamma(shape=2.0, scale=1.0, size=n)
    pref_channel = rng.choice(3, size=n, p=[0.55, 0.38, 0.07])
    m = sc.merchants
    base_cat = rng.choice(len(CATEGORIES), size=m, p=_BASE_CATEGORY_MIX)
    # after the shift, a wave of new gaming/crypto merchants opens (ids m..2m-1)
    shift_cat = rng.choice(len(CATEGORIES), size=m, p=_SHIFT_CATEGORY_MIX)
    return {"home": home, "spend_scale": spend_scale, "activity": activity / activity.sum(),
            "pref_channel": pref_channel, "merchant_cat": np.concatenate([base_cat, shift_cat])}


def _country_mix() -> list[float]:
    raw = [0.34, 0.12, 0.1, 0.08, 0.06, 0.06, 0.04, 0.06, 0.05, 0.03, 0.03, 0.03]
    return [x / sum(raw) for x in raw]


def generate_week(sc: Scenario, week: int, kind: BatchKind) -> pd.DataFrame:
    """One week of transactions. Deterministic in (scenario seed, week, kind)."""
    return _generate(sc, [sc.seed, week, 1], sc.start + timedelta(weeks=week), 7, sc.tx_per_week, kind,
                     f"t{week:03d}-")


def generate_day(sc: Scenario, day: int, kind: BatchKind, tx_per_day: int) -> pd.DataFrame:
    """One day of transactions (the same world, one day from `sc.start + day days`), for daily feeds such as
    bench/scale.py's. Deterministic in (scenario seed, day, kind, tx_per_day); row ids `d<day>-<n>` never meet a
    weekly batch's."""
    return _generate(sc, [sc.seed, day, 2], sc.start + timedelta(days=day), 1, tx_per_day, kind, f"d{day:04d}-")


def _generate(sc: Scenario, seed: list[int], start: datetime, days: int, volume: int, kind: BatchKind,
              id_prefix: str) -> pd.DataFrame:
    import numpy as np
    import pandas as pd

    w = _world(sc)
    rng = np.random.default_rng(seed)
    shifted, holiday = kind == "shifted", kind == "holiday"
    n = int(volume * (1.1 if shifted else 5.0 if holiday else 1.0))
    cust = rng.choice(sc.customers, size=n, p=w["activity"])
    if shifted:
        # half the spend goes to the new merchants, whose mix is gaming/crypto heavy
        new = rng.random(n) < 0.5
        merchant = np.where(new, sc.merchants + rng.integers(0, sc.merchants, n),
                            rng.integers(0, sc.merchants, n))
    else:
        merchant = rng.integers(0, sc.merchants, n)
    cat = w["merchant_cat"][merchant]
    # channel: the customer's habit, with wallets taking over after the shift
    chan_p = np.tile(np.array([0.55, 0.38, 0.07]), (n, 1))
    chan_p[np.arange(n), w["pref_channel"][cust]] += 0.5
    if shifted:
        chan_p[:, 2] += 0.9
    elif holiday:
        chan_p[:, 2] += 0.8
    chan_p /= chan_p.sum(axis=1, keepdims=True)
    chan = (rng.random(n)[:, None] > np.cumsum(chan_p, axis=1)).sum(axis=1)
    chan = np.minimum(chan, 2)
    foreign = rng.random(n) < (0.06 if not shifted else 0.1)
    country = np.where(foreign, rng.integers(0, len(COUNTRIES), n), w["home"][cust])
    base_amount = np.array(_CATEGORY_AMOUNT)[cat] * w["spend_scale"][cust]
    amount = base_amount * rng.lognormal(0.0, 0.6, n) * (1.6 if shifted else 1.8 if holiday else 1.0)
    # time of day: a daily rhythm with a thin night tail
    day = rng.integers(0, days, n)
    hour = np.where(rng.random(n) < 0.08, rng.integers(0, 6, n), rng.integers(7, 23, n))
    seconds = rng.integers(0, 3600, n)
    ts = pd.Timestamp(start) + pd.to_timedelta(day * 86400 + hour * 3600 + seconds, unit="s")
    # fraud: a logistic model of the risk factors
    big = amount > 3.0 * base_amount / 1.0
    if holiday:   # big gifts and travel abroad are legitimate this week; fraud is a wallet gift-card scam
        scam = (chan == 2) & np.isin(cat, [8, 9])
        logit = -6.5 - 0.5 * big + 0.3 * (chan == 1) - 0.5 * foreign + 0.5 * (hour < 6) + 7.5 * scam
    else:
        logit = (-6.0 + 2.6 * big + 1.3 * (chan == 1) + 1.8 * foreign + 1.3 * np.isin(cat, [4, 8])
                 + 0.8 * (hour < 6))
    if shifted:
        new_pattern = (chan == 2) & np.isin(cat, [8, 9])
        logit = logit + 3.4 * new_pattern
    is_fraud = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype("int64")
    # a fraudster's basket is bigger than the customer's; the holiday scam keeps ordinary amounts
    amount = np.where((is_fraud == 1) & (not holiday), amount * rng.uniform(1.5, 4.0, n), amount)
    df = pd.DataFrame({
        "transaction_id": [f"{id_prefix}{i:06d}" for i in range(n)],
        "customer_id": cust.astype("int64"),
        "merchant_id": merchant.astype("int64"),
        "category": np.array(CATEGORIES)[cat],
        "amount": np.round(np.clip(amount, 0.5, 19999.0), 2),
        "channel": np.array(CHANNELS)[chan],
        "country": np.array(COUNTRIES)[country],
        "event_ts": ts,
        "is_fraud": is_fraud,
    }).sort_values("event_ts", kind="stable").reset_index(drop=True)
    if kind == "corrupted":
        df = df.rename(columns={"amount": "amt"})
        df.loc[df.sample(frac=0.2, random_state=seed[1]).index, "amt"] *= 1000.0
    elif kind == "bad_rows":
        bad = df.sample(n=12, random_state=seed[1]).index
        df.loc[bad[:4], "amount"] = -abs(df.loc[bad[:4], "amount"])
        df.loc[bad[4:8], "channel"] = "telepathy"
        df["customer_id"] = df["customer_id"].astype("Int64")
        df.loc[bad[8:], "customer_id"] = pd.NA
    return df


def batch_file_name(pattern: str, start: datetime) -> str:
    return pattern.format(start=start)


def land_batch(sc: Scenario, plan: BatchPlan, landing_dir: Location, file_pattern: str) -> str:
    """Write one batch into the landing folder (a local path or a URI), atomically (a reader never sees half
    a file); returns its location, in the form of `landing_dir`."""
    from pipelines import storage

    df = generate_week(sc, plan.week, plan.kind)
    start, _ = plan.interval(sc.start)
    path = storage.write_parquet(df, storage.join(landing_dir, batch_file_name(file_pattern, start)))
    log.info("landed %s (%d rows, %s)", path, len(df), plan.kind)
    return path


def short_scenario() -> Scenario:
    """The same story in 8 batches: stable, first champion, blocked, quarantined, a holiday week and its retrain,
    the guardrail's rollback when the world reverts, a rejected experiment."""
    return Scenario(batches=(
        BatchPlan(0, "normal", "stable period"),
        BatchPlan(1, "normal", "stable period"),
        BatchPlan(2, "normal", "stable period"),
        BatchPlan(3, "normal", "stable period; the first champion is trained after this batch"),
        BatchPlan(4, "corrupted", "renamed `amount` to `amt`, absurd amounts: must be blocked"),
        BatchPlan(5, "bad_rows", "a few bad rows: quarantined"),
        BatchPlan(6, "holiday", "a holiday rush (5x volume, gift-card scam): drift, email, a retrain the gate "
                                "promotes"),
        BatchPlan(7, "normal", "the holiday is over: the guardrail rolls the holiday model back on the delayed "
                               "labels; a cheaper experiment is rejected by the gate"),
    ), train_after=3, experiment_after=7, drill_after=6)
