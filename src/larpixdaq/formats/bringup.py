"""The hydra bring-up planner: the register writes that give a powered-up tree its shape.

At power-on every chip answers as chip 1 with its upstream UARTs off, so a tree is brought
up root outward, one chip per UART at a time. This derives those writes - the same writes,
in the same order and with the same values, as the reference client's ``init_network`` -
so real boards behave identically under either. Pure: a
:class:`~larpixdaq.formats.hydra.HydraTree` in, the steps out;
:meth:`larpixdaq.formats.network.Network.bring_up_order` names the tree by io_group and
io_channel.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from larpixdaq.formats.chipconfig import ChipConfig
from larpixdaq.formats.hydra import POWER_ON_CHIP_ID, HydraTree, NodeId
from larpixdaq.formats.registers import (
    CHIP_ID_REG,
    DOWNSTREAM_REG,
    MOSI_REG,
    UPSTREAM_REG,
)
from larpixdaq.formats.registers import field as register_field


@dataclass(frozen=True)
class ConfigWrite:
    """One configuration-write packet of the bring-up.

    ``chip_id`` is the id the packet is addressed to; ``parity_chip_id`` the id the
    reference client computed the parity bit for. They differ only for the chip-id write
    (addressed to the power-on id 1, parity computed for the new id), so a faithful sender
    reproduces the reference's parity and a faithful chip must tolerate it.
    """

    chip_id: int
    register: int
    value: int
    parity_chip_id: int


@dataclass(frozen=True)
class BringUpStep:
    """Everything written to give one chip its id and links, in sending order."""

    chip_id: NodeId
    """The chip configured; a pseudo node (e.g. a PACMAN seen upstream of a chip) gets only
    its parent's upstream enable."""
    parent: NodeId | None
    parent_uart: int | None
    """The parent's UART whose upstream enable (register 124) is set; None for a root chip."""
    upstream_enable: int | None
    """Register 124 value written to the parent (all its upstream UARTs enabled so far)."""
    parent_mosi: int | None
    """Register 126 value written to the parent if a command input had to be re-enabled."""
    downstream: int | None
    """Register 125 value of the chip: downstream UART enables, bits 4-7 differential."""
    mosi: int | None
    """Register 126 value of the chip (its command inputs), or None if left at power-on."""
    writes: tuple[ConfigWrite, ...]

    @property
    def chip_id_write(self) -> ConfigWrite | None:
        return next((w for w in self.writes if w.register == CHIP_ID_REG), None)


def _nibble(cfg: ChipConfig, name: str) -> int:
    return int(cfg.to_registers()[register_field(name).first_register])


def _enable_only(cfg: ChipConfig, name: str, uarts: Iterable[int]) -> int:
    """Set the 4-UART enable ``name`` to exactly ``uarts``; the register value it makes."""
    enabled = [0] * 4
    for uart in uarts:
        enabled[uart] = 1
    cfg[name] = enabled
    return _nibble(cfg, name)


def plan_bring_up(
    tree: HydraTree, differential: bool = True, modify_mosi: bool = True
) -> list[BringUpStep]:
    """The configuration writes that bring up one io_channel's chips, root outward.

    Starts from every chip at power-on (id 1, all upstream disabled, all command inputs
    enabled). For each chip in breadth-first order: enable its parent's upstream UART
    (register 124, bits accumulate over siblings) and re-enable any of the parent's command
    inputs that were turned off; write the chip id (register 122) addressed to chip 1; set
    the downstream UARTs toward its parents (register 125, with bits 4-7 all set when
    ``differential``); and enable only the command inputs it has links on (register 126)
    when ``modify_mosi``.
    """
    configs: dict[NodeId, ChipConfig] = {}

    def cfg_of(cid: NodeId) -> ChipConfig:
        if cid not in configs:
            configs[cid] = ChipConfig()
        return configs[cid]

    steps: list[BringUpStep] = []
    for cid in tree.order():
        writes: list[ConfigWrite] = []
        first_parent: NodeId | None = None
        first_uart: int | None = None
        upstream: int | None = None
        parent_mosi: int | None = None
        for parent, uart in tree.parents(cid):
            if first_parent is None:
                first_parent = parent
            if not isinstance(parent, int):
                continue
            pc = cfg_of(parent)
            pc.set_value("enable_miso_upstream", 1, index=uart)
            value = _nibble(pc, "enable_miso_upstream")
            writes.append(ConfigWrite(parent, UPSTREAM_REG, value, parent))
            if first_uart is None:
                first_uart, upstream = uart, value
            for muart in tree.nodes[parent].mosi_uarts.values():
                if not pc.get_value("enable_mosi", index=muart):
                    pc.set_value("enable_mosi", 1, index=muart)
                    parent_mosi = _nibble(pc, "enable_mosi")
                    writes.append(ConfigWrite(parent, MOSI_REG, parent_mosi, parent))
        downstream: int | None = None
        mosi: int | None = None
        if isinstance(cid, int):
            cc = cfg_of(cid)
            cc["chip_id"] = cid
            writes.append(ConfigWrite(POWER_ON_CHIP_ID, CHIP_ID_REG, cid, cid))
            if differential:
                cc["enable_miso_differential"] = [1] * 4
            node = tree.nodes[cid]
            downstream = _enable_only(cc, "enable_miso_downstream", node.miso_ds_uarts.values())
            writes.append(ConfigWrite(cid, DOWNSTREAM_REG, downstream, cid))
            if modify_mosi:
                mosi = _enable_only(cc, "enable_mosi", node.mosi_uarts.values())
                writes.append(ConfigWrite(cid, MOSI_REG, mosi, cid))
        if not writes:
            continue  # a pseudo node fed by nothing configurable (the PACMAN itself)
        steps.append(
            BringUpStep(
                chip_id=cid,
                parent=first_parent,
                parent_uart=first_uart,
                upstream_enable=upstream,
                parent_mosi=parent_mosi,
                downstream=downstream,
                mosi=mosi,
                writes=tuple(writes),
            )
        )
    return steps


def bring_up_registers(
    tree: HydraTree, differential: bool = True, modify_mosi: bool = True
) -> dict[int, dict[int, int]]:
    """Each chip's final ``{register: value}`` for the registers the bring-up writes."""
    out: dict[int, dict[int, int]] = {}
    for step in plan_bring_up(tree, differential, modify_mosi):
        for w in step.writes:
            target = w.parity_chip_id  # the chip the write configures
            out.setdefault(target, {})[w.register] = w.value
    return out
