"""A tiling decision for one nest: band, loop order, tile sizes (the codegen's input)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class TilePlan:
    nest: str
    band: tuple[str, ...]            # original band order, outer -> inner
    order: tuple[str, ...]           # order of tile loops and of point loops, outer -> inner
    tiles: tuple[tuple[str, int], ...]  # (var, tile size); size >= extent means one tile
    footprint_bytes: int = 0         # of one full tile (footprint.py)
    capacity_bytes: int = 0          # cache bytes it was fitted to (fraction applied)
    level: str = ""                  # "L1", "L2", "L3", or "autotune"/"manual"
    seconds: float = 0.0             # time the selection took
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def tile(self) -> dict[str, int]:
        return dict(self.tiles)

    def describe(self) -> str:
        return " ".join(f"{v}={t}" for v, t in self.tiles)


def manual(nest, tiles: dict[str, int], order=None, band=None) -> TilePlan:
    """A plan with given tile sizes (autotuning, tests); order defaults to the band order."""
    band = tuple(band if band is not None else nest.band)
    order = tuple(order if order is not None else band)
    if sorted(order) != sorted(band) or sorted(tiles) != sorted(band):
        raise ValueError(f"{nest.name}: order {order} / tiles {sorted(tiles)} must cover band {band}")
    if any(int(t) < 1 for t in tiles.values()):
        raise ValueError(f"{nest.name}: tile sizes must be >= 1: {tiles}")
    return TilePlan(nest.name, band, order, tuple((v, int(tiles[v])) for v in band), level="manual")
