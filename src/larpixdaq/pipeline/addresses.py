"""Where the data path listens by default: beside the core, at fixed offsets from its port.

``larpix-daq up`` puts each service at the core's port plus the offset named here, and the
stand-alone commands and the aggregator default to the same addresses beside the default
core, so the two ways of starting the DAQ agree without a setting.
"""

from __future__ import annotations

from larpixdaq.runcontrol.addresses import DEFAULT_CORE

LOGS_OFFSET = 1  # the log collector
INLET_OFFSET = 10  # aggregator: producers connect here
OUTLET_OFFSET = 11  # aggregator: storage connects here
MONITOR_OFFSET = 12  # aggregator: the monitor's sampled copy


def beside_core(core: str, offset: int, host: str | None = None) -> str:
    """The address ``offset`` ports above the core's ``tcp://HOST:PORT`` (on ``host`` if
    given, e.g. ``*`` to bind every interface)."""
    core_host, _, port = core.removeprefix("tcp://").rpartition(":")
    return f"tcp://{host or core_host}:{int(port) + offset}"


DEFAULT_INLET = beside_core(DEFAULT_CORE, INLET_OFFSET)
DEFAULT_OUTLET = beside_core(DEFAULT_CORE, OUTLET_OFFSET)
DEFAULT_MONITOR = beside_core(DEFAULT_CORE, MONITOR_OFFSET)
DEFAULT_LOGS_BIND = beside_core(DEFAULT_CORE, LOGS_OFFSET, host="*")
