"""PE array: rows x cols PEs, output-stationary, one 2x2 output block per PE (docs/algorithms.md §5.5 CHOICE).

Each cycle the array takes element k of 2*rows Q rows (`q_0` ...) and of 2*cols K rows (`k_0` ...);
Q element r goes to every PE of PE-row r//2 and K element c to every PE of PE-column c//2 (broadcast,
the seed's "local A-stationary" tile: A rows stay while B columns stream). After the last element the
array holds the (2*rows) x (2*cols) tile of A = I_Q I_K^T (mode 0) or T (mode 1) in `acc_r_c`, and the
block importance of PE (i, j) in `imp_i_j`.
"""

from __future__ import annotations

from amaranth.hdl import Module, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from sparsa.hw.rtl.params import RtlParams
from sparsa.hw.rtl.pe import PE, PEInstance


class PEArray(wiring.Component):
    def __init__(self, params: RtlParams, *, split: str | None = None, hier: bool = False):
        self.params = params
        self.split = split or params.split
        self.hier = hier  # PEs as instances of a separately synthesised `sparsa_pe` (synthesis only)
        R, C = 2 * params.pe_rows, 2 * params.pe_cols
        n_b, acc = params.total_bits, params.acc_bits
        members = {"valid": In(1), "first": In(1), "last": In(1), "mode": In(1)}
        members.update({f"q_{r}": In(signed(n_b)) for r in range(R)})
        members.update({f"k_{c}": In(signed(n_b)) for c in range(C)})
        members.update({f"acc_{r}_{c}": Out(signed(acc)) for r in range(R) for c in range(C)})
        members.update(
            {f"imp_{i}_{j}": Out(unsigned(params.importance_bits)) for i in range(params.pe_rows) for j in range(params.pe_cols)}
        )
        members["out_valid"] = Out(1)
        super().__init__(wiring.Signature(members))

    def elaborate(self, platform):
        m = Module()
        p = self.params
        for i in range(p.pe_rows):
            for j in range(p.pe_cols):
                pe = PEInstance(p) if self.hier else PE(p, split=self.split)
                m.submodules[f"pe_{i}_{j}"] = pe
                m.d.comb += [
                    pe.valid.eq(self.valid),
                    pe.first.eq(self.first),
                    pe.last.eq(self.last),
                    pe.mode.eq(self.mode),
                    pe.q0.eq(getattr(self, f"q_{2 * i}")),
                    pe.q1.eq(getattr(self, f"q_{2 * i + 1}")),
                    pe.k0.eq(getattr(self, f"k_{2 * j}")),
                    pe.k1.eq(getattr(self, f"k_{2 * j + 1}")),
                    getattr(self, f"imp_{i}_{j}").eq(pe.importance),
                ]
                for a in range(2):
                    for b in range(2):
                        m.d.comb += getattr(self, f"acc_{2 * i + a}_{2 * j + b}").eq(getattr(pe, f"acc{a}{b}"))
                if i == 0 and j == 0:
                    m.d.comb += self.out_valid.eq(pe.out_valid)
        return m
