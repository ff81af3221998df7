"""One calm test (issue 17): every row the kernel calls calm scores calm.

`detection.kernel.fire_calm` lets the engine skip `score_fire` for rows whose
rates are provably quiet and whose levels are well clear of every threshold.
If a rule is added to `score_fire` and not to the shortcut, some row called
calm scores otherwise, and this property fails.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from detection import kernel as k
from detection import params as p
from detection.engine import resolve_thresholds
from firesafe import contract
from tests.helpers import examples

FIRE_KINDS = (k.KIND_SMOKE, k.KIND_HEAT, k.KIND_MULTI)
RATE_THRESHOLDS = ("heat_rise_c_per_min", "rate_of_rise_c_per_min", None, "co_rise_ppm_per_min")
RATE_COLUMNS = (k.R_T, k.R_OBS, k.R_CO, k.R_RH)


def values(lo: float, hi: float) -> st.SearchStrategy[float]:
    return st.one_of(
        st.floats(lo, hi, allow_nan=False), st.just(float("nan")), st.sampled_from([lo, hi])
    )


@settings(max_examples=examples(400), deadline=None)
@given(
    kind=st.sampled_from(FIRE_KINDS),
    n=st.integers(1, 12),
    data=st.data(),
)
def test_every_row_called_calm_scores_calm(kind: int, n: int, data: st.DataObject) -> None:
    name = contract.KINDS[kind]
    over = {}
    if data.draw(st.booleans()):
        over = {
            "obscuration_alarm": data.draw(st.floats(0.5, 12.0)),
            "obscuration_pre_alarm": data.draw(st.floats(0.2, 12.0)),
            "static_c": data.draw(st.floats(30.0, 90.0)),
            "co_ppm": data.draw(st.floats(3.0, 80.0)),
            "steam_rh": data.draw(st.floats(60.0, 100.0)),
            "fast_growth_per_min": data.draw(st.floats(0.5, 10.0)),
        }
    thr: k.Thr = dict(resolve_thresholds(name, over))

    def col(lo: float, hi: float) -> np.ndarray:
        return np.array([data.draw(values(lo, hi)) for _ in range(n)])

    temp = col(-10.0, 120.0)
    comp = col(-1.0, 20.0)
    co = col(0.0, 100.0)
    rh = col(0.0, 100.0)
    step_obs = col(-20.0, 20.0)
    drift = np.array([data.draw(st.booleans()) for _ in range(n)])
    prev = np.array([data.draw(st.integers(0, (1 << k.NBITS) - 1)) for _ in range(n)], np.uint32)
    # Rates as the quiet path leaves them: NaN, or any value below its
    # threshold (what `quiet_bound` proves for a quiet row).
    rate = np.full((n, 4), np.nan)
    for col_i, tname in zip(RATE_COLUMNS, RATE_THRESHOLDS, strict=True):
        limits = [float(thr[t]) for t in (tname, "heat_rise_c_per_min") if t and t in thr]
        if col_i == k.R_RH and "steam_rh_rise_per_min" in thr:
            limits = [float(thr["steam_rh_rise_per_min"])]
        if col_i == k.R_T:  # the engine's temperature bound also covers WARM
            limits.append(p.MULTI_WARM_C_PER_MIN)
        if limits:
            top = float(np.min(limits))
            for i in range(n):
                if data.draw(st.booleans()):
                    rate[i, col_i] = data.draw(st.floats(-50.0, top, exclude_max=True))
    step = np.full((n, 2), np.nan)
    step[:, 0] = col(-100.0, 100.0)
    step[:, 1] = step_obs
    quiet = np.ones(n, np.bool_)
    calm = k.fire_calm(kind, thr, temp, comp, co, rh, step_obs, quiet)
    scored = k.score_fire(kind, thr, temp, comp, drift, co, rh, rate, step, prev)
    want = np.uint32(k.fire_calm_bits(kind))
    for i in np.flatnonzero(calm).tolist():
        extra = int(k.Flag.DRIFT) if drift[i] and kind != k.KIND_HEAT else 0
        assert int(scored[i]) == int(want) | extra, (i, k.Flag(int(scored[i])))


def test_calm_rows_are_some_rows() -> None:
    """The shortcut is not vacuous: clean air is calm, an alarm level is not."""
    thr: k.Thr = dict(p.THRESHOLD_DEFAULTS["multi"])
    one = np.ones(2)
    calm = k.fire_calm(
        k.KIND_MULTI,
        thr,
        np.array([21.0, 21.0]),
        np.array([0.1, 3.5]),
        one * 2.0,
        one * 45.0,
        one * 0.0,
        np.ones(2, np.bool_),
    )
    assert calm.tolist() == [True, False]
