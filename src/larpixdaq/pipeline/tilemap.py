"""Which tile each UART feeds, and where each tile sits: the monitor's map of the detector.

Pure (no files: the caller loads the :class:`~larpixdaq.geometry.Detector`). Without a
detector every io_group is standard v2 tiles, io_channels ``4t+1..4t+4`` being tile ``t + 1``
at the origin. With one, a UART's tile is the layout's (in the 2x2 some tiles use 2 or 3
io_channels, so the rule above would be wrong), and the table says for each tile its module,
anode, centre and orientation, which the page uses to draw anode and detector views.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from larpixdaq.geometry import CHANNELS, Detector

UARTS_PER_TILE = 4


class TileMap:
    """UART -> tile, and the tiles' places (see module doc)."""

    def __init__(self, detector: Detector | None = None) -> None:
        self.detector = detector
        self._uart: dict[tuple[int, int], int] = {}
        self._tiles: dict[int, dict[str, Any]] = {}
        if detector is not None:
            self._build(detector)

    @property
    def name(self) -> str:
        return self.detector.name if self.detector is not None else "standard tiles"

    def tile_of(self, io_group: int, io_channel: int) -> tuple[int, int]:
        """(io_group, tile number) of a UART: the layout's tile, or ``(ch - 1) // 4 + 1``.

        A UART the detector does not know is placed by the standard rule, offset past the
        layout's tile numbers, so its hits are still shown (and the page names it unknown)."""
        key = (int(io_group), int(io_channel))
        if self.detector is None:
            return key[0], (key[1] - 1) // UARTS_PER_TILE + 1
        slot = self._uart.get(key)
        if slot is None:
            return key[0], 1000 + (key[1] - 1) // UARTS_PER_TILE + 1
        return key[0], int(self._tiles[slot]["tile"])

    def info(self, io_group: int, tile: int) -> dict[str, Any]:
        """Module, anode, centre (mm) and orientation of a tile (defaults without a detector)."""
        for t in self._tiles.values():
            if t["io_group"] == io_group and t["tile"] == tile:
                return {k: t[k] for k in ("module", "anode", "x_mm", "y_mm", "x_sign",
                                          "y_sign")}
        return {"module": 0, "anode": 0, "x_mm": 0.0, "y_mm": 0.0, "x_sign": 1, "y_sign": 1}

    def table(self) -> list[dict[str, Any]]:
        """Every tile of the detector (empty without one), for the page's views."""
        return [dict(t) for t in self._tiles.values()]

    def _build(self, det: Detector) -> None:
        keys = det.keys
        group, chan, chip = keys >> 16, (keys >> 8) & 0xFF, keys & 0xFF
        lay = det.tile_layout
        lx, ly = lay.chip_xy(chip[:, None], np.arange(CHANNELS)[None, :])
        for i in range(len(keys)):
            self._uart.setdefault((int(group[i]), int(chan[i])), -1)
        slots: dict[tuple[int, int, int], list[int]] = {}
        for i, k in enumerate(zip(det.slot_module.tolist(), det.slot_tile.tolist(),
                                  group.tolist(), strict=True)):
            slots.setdefault(k, []).append(i)
        for n, ((module, tile, g), rows) in enumerate(sorted(slots.items())):
            r = np.asarray(rows)
            ok = ~np.isnan(lx[r])
            dx, dy = det.slot_x[r][ok], det.slot_y[r][ok]
            sx = 1 if np.cov(lx[r][ok], dx)[0, 1] >= 0 else -1
            sy = 1 if np.cov(ly[r][ok], dy)[0, 1] >= 0 else -1
            # the centre: pixel centres minus their local offsets, averaged
            cx = float(np.mean(dx - sx * lx[r][ok]))
            cy = float(np.mean(dy - sy * ly[r][ok]))
            channels = sorted({int(c) for c in chan[r].tolist()})
            self._tiles[n] = {"io_group": int(g), "tile": int(tile), "module": int(module),
                              "anode": int(det.slot_anode[r[0]]), "io_channels": channels,
                              "x_mm": round(cx, 2), "y_mm": round(cy, 2),
                              "x_sign": sx, "y_sign": sy}
            for c in channels:
                self._uart[(int(g), c)] = n
