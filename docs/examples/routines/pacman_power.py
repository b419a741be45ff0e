"""Power a PACMAN's tiles, set their supplies and UART clocks, and read the supplies back.

Load and run it through the producer that owns the board (docs/operating.md):

    larpix-daq routine load docs/examples/routines
    larpix-daq routine run pacman_power vddd_mv=1800 vdda_mv=1800 uart_clock_ratio=4

The register numbers and ADC conversions are the PACMAN's as the project's emulator
implements them (``larpixdaq.boards.simboard``), so this file states none of them again.
"""

from __future__ import annotations

import time

from larpixdaq.boards.simboard import (
    DAC_DEFAULT,
    DAC_DEFAULT_MV,
    REG_IDDA_ADC,
    REG_IDDD_ADC,
    REG_TILE_ENABLE,
    REG_VDDA_ADC,
    REG_VDDA_DAC,
    REG_VDDD_ADC,
    REG_VDDD_DAC,
    uart_clock_ratio_register,
)
from larpixdaq.formats.chipkey import parse_chip_key
from larpixdaq.routines.params import Param, params

NAME = "pacman_power"
_MAX_MV = DAC_DEFAULT_MV * 0xFFFF / DAC_DEFAULT  # the DAC's full scale


def _mv(x: int) -> float:
    return float(((x >> 16) >> 3) * 4)


def _ma(x: int) -> float:
    return float(((x >> 16) - (x >> 31) * 65535) * 500 * 0.01)


@params(vddd_mv=Param(float, minimum=0, maximum=_MAX_MV),
        vdda_mv=Param(float, minimum=0, maximum=_MAX_MV),
        uart_clock_ratio=Param(int, minimum=1, maximum=255, optional=True),
        settle=Param(float, minimum=0, maximum=10))
def routine(ctx, vddd_mv: float = 1800.0, vdda_mv: float = 1800.0,
            uart_clock_ratio: int | None = None, io_channels: list[int] | None = None,
            settle: float = 0.5):
    """Set VDDD/VDDA, power the tiles of the network's io_channels, read the supplies back.

    ``uart_clock_ratio`` (PACMAN clock / UART clock) is written for those io_channels when
    given; ``io_channels`` defaults to those of the loaded network.
    """
    client = ctx.board.client
    if client is None:
        raise RuntimeError("this producer has no PACMAN (a replayed file)")
    channels = sorted(set(io_channels or {parse_chip_key(k)[1] for k in ctx.chip_keys}))
    if not channels:
        raise RuntimeError("no io_channels: load the network first (larpix-daq config network)")
    client.write_registers([(REG_VDDD_DAC, round(vddd_mv / DAC_DEFAULT_MV * DAC_DEFAULT)),
                            (REG_VDDA_DAC, round(vdda_mv / DAC_DEFAULT_MV * DAC_DEFAULT))])
    yield {"stage": "supplies set", "vddd_mv": vddd_mv, "vdda_mv": vdda_mv}
    if uart_clock_ratio is not None:
        client.write_registers([(uart_clock_ratio_register(c), uart_clock_ratio)
                                for c in channels])
        yield {"stage": "UART clocks set", "ratio": uart_clock_ratio, "io_channels": channels}
    client.enable_channels(channels)  # tile power and UART receivers, as bring-up does
    time.sleep(settle)
    vddd, iddd, vdda, idda, tiles = client.read_registers(
        [REG_VDDD_ADC, REG_IDDD_ADC, REG_VDDA_ADC, REG_IDDA_ADC, REG_TILE_ENABLE])
    out = {"io_channels": channels, "tile_enable": tiles, "vddd_mv": _mv(vddd),
           "iddd_ma": _ma(iddd), "vdda_mv": _mv(vdda), "idda_ma": _ma(idda)}
    ctx.send_info(f"pacman_power: VDDD {out['vddd_mv']:.0f} mV, VDDA {out['vdda_mv']:.0f} mV")
    return out
