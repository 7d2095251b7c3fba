"""Run a cycle trace through an RTL unit: Amaranth's Python simulator, or Verilator via the Verilog.

A trace is a list of per-cycle input dicts (port name -> int; ports left out keep their last value).
Each cycle: apply the inputs, clock one rising edge, then sample the outputs. The result is one dict of
output values per cycle (signed ports as signed ints). Both backends follow exactly this protocol, so
the same expected values check both.
"""

from __future__ import annotations

from typing import Any

from amaranth.hdl import Shape
from amaranth.lib import wiring
from amaranth.lib.wiring import Flow


def port_list(unit: wiring.Component) -> list[tuple[str, int, bool, bool, int]]:
    """(name, width, signed, is_input, initial value) for every port of a unit's signature."""
    out = []
    for path, member in unit.signature.members.flatten():
        name = "__".join(str(x) for x in path)
        shape = Shape.cast(member.shape)
        out.append((name, shape.width, shape.signed, member.flow == Flow.In, int(member.init or 0)))
    return out


def run_amaranth(
    unit: wiring.Component,
    trace: list[dict[str, int]],
    sample: list[str] | None = None,
    strobe: str | None = None,
) -> list[dict[str, int] | None]:
    """Simulate `trace` with Amaranth's Python simulator.

    `sample`: output names to read (default: all). `strobe`: an output flag; when given, the other
    outputs are read only in cycles where it is 1 (reading is the slow part), else None is returned.
    """
    from amaranth.sim import Simulator

    ports = {n: getattr(unit, n) for n, *_ in port_list(unit)}
    outs = sample or [n for n, _, _, is_in, _ in port_list(unit) if not is_in]
    results: list[Any] = []

    async def bench(ctx):
        for cycle in trace:
            for name, value in cycle.items():
                ctx.set(ports[name], value)
            await ctx.tick()
            if strobe is not None and not ctx.get(ports[strobe]):
                results.append(None)
                continue
            results.append({n: ctx.get(ports[n]) for n in outs})

    sim = Simulator(unit)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return results
