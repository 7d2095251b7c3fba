"""N-core parallel wrapper, generalised from seed 000's `parallel_compute` (docs/algorithms.md §2.5).

The seed's block has 4 identical lanes: each registers an 8-bit input on one clock edge and a
16-bit result (its placeholder operation: input + 10) on the next, with an asynchronous active-low
reset clearing both: 4 results per cycle, 2-cycle latency. Here the number of lanes (`cores`), the
widths and the addend are parameters (preset `seed000` = the seed's block), and a lane may instead be
a full HDP PE (`lane_kind="pe"`): each core's operands are registered on the first edge and
accumulated by its PE, so N blocks are computed in parallel (preset `hdp-server`: 8 cores).
"""

from __future__ import annotations

from amaranth.hdl import ClockDomain, ClockSignal, Module, ResetSignal, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from sparsa.hw.rtl.params import RtlParams
from sparsa.hw.rtl.pe import PE, PEInstance, pe_members

PE_INPUTS = ("valid", "first", "last", "mode", "q0", "q1", "k0", "k1")
PE_OUTPUTS = ("acc00", "acc01", "acc10", "acc11", "importance", "out_valid")


class ParallelCores(wiring.Component):
    def __init__(self, params: RtlParams, *, split: str | None = None, hier: bool = False):
        self.params = params
        self.split = split or params.split
        self.hier = hier  # PE lanes as instances of a separately synthesised `sparsa_pe` (synthesis only)
        members: dict = {"rst_n": In(1, init=1)}
        n = params.cores
        if params.lane_kind == "seed":
            members.update({f"data_in_{i}": In(unsigned(params.lane_in_bits)) for i in range(n)})
            members.update({f"result_out_{i}": Out(unsigned(params.lane_out_bits)) for i in range(n)})
        else:
            ref = pe_members(params)
            for i in range(n):
                for name in PE_INPUTS:
                    members[f"c{i}_{name}"] = In(ref[name].shape)
                for name in PE_OUTPUTS:
                    members[f"c{i}_{name}"] = Out(ref[name].shape)
        super().__init__(wiring.Signature(members))

    def elaborate(self, platform):
        m = Module()
        p = self.params
        # the seed's asynchronous active-low reset, on the unit's own clock domain
        m.domains.lane = ClockDomain("lane", async_reset=True, local=True)
        m.d.comb += [ClockSignal("lane").eq(ClockSignal("sync")), ResetSignal("lane").eq(~self.rst_n)]
        for i in range(p.cores):
            if p.lane_kind == "seed":
                data_reg = Signal(unsigned(p.lane_in_bits), name=f"data_reg_{i}")
                out = getattr(self, f"result_out_{i}")
                m.d.lane += [data_reg.eq(getattr(self, f"data_in_{i}")), out.eq(data_reg + p.lane_addend)]
            else:
                pe = PEInstance(p) if self.hier else PE(p, split=self.split)
                m.submodules[f"core_{i}"] = wiring_domain(pe)
                for name in PE_INPUTS:
                    reg = Signal.like(getattr(pe, name), name=f"c{i}_{name}_reg")
                    m.d.lane += reg.eq(getattr(self, f"c{i}_{name}"))
                    m.d.comb += getattr(pe, name).eq(reg)
                for name in PE_OUTPUTS:
                    m.d.comb += getattr(self, f"c{i}_{name}").eq(getattr(pe, name))
        return m


def wiring_domain(pe: PE):
    """Run a PE on the wrapper's `lane` domain (async reset) instead of `sync`."""
    from amaranth.hdl import DomainRenamer

    return DomainRenamer("lane")(pe)
