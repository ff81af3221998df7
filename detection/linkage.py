"""Exit-sign directions on a confirmed fire (contract section 2).

A dynamic exit sign points away from the fire: "left"/"right" name the side
whose route leads through a zone NOT on fire, "both" when neither side is on
fire, "off" when both are (this route must not be used).

A side with no route (`None`, or -1 in the array form) counts as not on
fire: the sign has no information that it is unsafe, and the contract's
directions describe the sign's arrows, not the building. The sign's own
zone is not consulted: where it stands is given by its routes.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
from numpy.typing import ArrayLike, NDArray

NO_ROUTE = -1  # zone key meaning "this side has no route"

_TABLE = np.array(["both", "right", "left", "off"])  # index: left_burning + 2 * right_burning


def sign_direction(left_zone_burning: bool | None, right_zone_burning: bool | None) -> str:
    """Direction for one sign; None (no route on that side) counts as not burning."""
    left = bool(left_zone_burning)
    right = bool(right_zone_burning)
    if left and right:
        return "off"
    if left:
        return "right"
    if right:
        return "left"
    return "both"


def building_directions(
    left_zone: ArrayLike, right_zone: ArrayLike, burning_zones: Collection[int]
) -> NDArray[np.str_]:
    """Directions for every evac device of a building at once.

    left_zone / right_zone: int64[k] zone keys of each sign's routes
    (NO_ROUTE where a side has none); burning_zones: zone keys with a
    confirmed fire.
    """
    lz = np.asarray(left_zone, np.int64)
    rz = np.asarray(right_zone, np.int64)
    burning = np.fromiter((int(z) for z in burning_zones), np.int64)
    lb = np.isin(lz, burning) & (lz != NO_ROUTE)
    rb = np.isin(rz, burning) & (rz != NO_ROUTE)
    out: NDArray[np.str_] = _TABLE[lb.astype(np.int64) + 2 * rb.astype(np.int64)]
    return out
