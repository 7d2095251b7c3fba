"""Processing element: one 2x2 output block, output-stationary integer MAC (docs/algorithms.md §5.5).

Each cycle with `valid` the PE takes element k of two Q rows (`q0`, `q1`) and of two K rows (`k0`, `k1`)
as Qm.f codes and adds, for every (i, j) of its block,
  mode 0 (integer pass):       A-term  I_Q * I_K
  mode 1 (int/frac approx):    T-term  2^f * I_Q * I_K + F_Q * I_K + I_Q * F_K   (F_Q * F_K is skipped)
to accumulator (i, j). `first` starts a new block (the accumulator takes the term instead of adding it);
`last` marks the final element of the dot product: one cycle later `out_valid` is high, the four
accumulators hold the block, and `importance` = sum |acc| (the block importance theta of the integer pass).
The split of a code into I and F is wiring (floor split) or a small correction (trunc split), docs/algorithms.md §1.2.
"""

from __future__ import annotations

from amaranth.hdl import Const, Elaboratable, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import Flow, In, Out

from sparsa.hw.rtl.params import RtlParams

MODE_INT = 0
MODE_APPROX = 1


def split_code(m: Module, q, p: RtlParams, split: str, name: str):
    """Integer and fractional part of code `q` as signals (docs/algorithms.md §1.2)."""
    f = p.frac_bits
    i_part = Signal(signed(p.int_bits + 1), name=f"{name}_i")
    f_part = Signal(signed(f + 1), name=f"{name}_f")
    floor_i = q >> f  # arithmetic: q is signed
    low = q.as_unsigned()[:f] if f else Const(0, 1)
    if split == "floor":
        m.d.comb += [i_part.eq(floor_i), f_part.eq(low)]
    else:  # trunc toward zero: negative codes with a fractional remainder round their integer part up
        bump = (q < 0) & (low != 0) if f else Const(0, 1)
        m.d.comb += [
            i_part.eq(floor_i + bump),
            f_part.eq(q - ((floor_i + bump) << f)),
        ]
    return i_part, f_part


def pe_members(params: RtlParams) -> dict:
    """The PE's ports (also used by wrappers that expose PE ports per core)."""
    n_b, acc = params.total_bits, params.acc_bits
    return {
        "valid": In(1),
        "first": In(1),
        "last": In(1),
        "mode": In(1),
        "q0": In(signed(n_b)),
        "q1": In(signed(n_b)),
        "k0": In(signed(n_b)),
        "k1": In(signed(n_b)),
        "acc00": Out(signed(acc)),
        "acc01": Out(signed(acc)),
        "acc10": Out(signed(acc)),
        "acc11": Out(signed(acc)),
        "importance": Out(unsigned(params.importance_bits)),
        "out_valid": Out(1),
    }


class PE(wiring.Component):
    def __init__(self, params: RtlParams, *, split: str | None = None):
        self.params = params
        # `split` may differ from params.split: the mutation tests build a PE with the other split
        self.split = split or params.split
        super().__init__(wiring.Signature(pe_members(params)))

    def elaborate(self, platform):
        m = Module()
        p = self.params
        f = p.frac_bits
        iq0, fq0 = split_code(m, self.q0, p, self.split, "q0")
        iq1, fq1 = split_code(m, self.q1, p, self.split, "q1")
        ik0, fk0 = split_code(m, self.k0, p, self.split, "k0")
        ik1, fk1 = split_code(m, self.k1, p, self.split, "k1")
        accs = [[self.acc00, self.acc01], [self.acc10, self.acc11]]
        for i, (iq, fq) in enumerate(((iq0, fq0), (iq1, fq1))):
            for j, (ik, fk) in enumerate(((ik0, fk0), (ik1, fk1))):
                ii = Signal(signed(2 * (p.int_bits + 1)), name=f"ii{i}{j}")
                term = Signal(signed(p.acc_bits), name=f"term{i}{j}")
                m.d.comb += ii.eq(iq * ik)
                with m.If(self.mode == MODE_APPROX):
                    m.d.comb += term.eq((ii << f) + fq * ik + iq * fk)
                with m.Else():
                    m.d.comb += term.eq(ii)
                a = accs[i][j]
                with m.If(self.valid):
                    m.d.sync += a.eq(Mux(self.first, term, a + term))
        m.d.sync += self.out_valid.eq(self.valid & self.last)
        mags = []
        for i in range(2):
            for j in range(2):
                a = accs[i][j]
                mag = Signal(unsigned(p.acc_bits), name=f"mag{i}{j}")
                m.d.comb += mag.eq(Mux(a < 0, -a, a))
                mags.append(mag)
        m.d.comb += self.importance.eq(mags[0] + mags[1] + mags[2] + mags[3])
        return m


class PEInstance(Elaboratable):
    """A PE as an instance of the separately synthesised module `sparsa_pe` (synthesis only: lets Yosys
    map the PE once and count it per instance, instead of flattening hundreds of copies)."""

    def __init__(self, params: RtlParams, module: str = "sparsa_pe"):
        self.module = module
        for name, member in pe_members(params).items():
            setattr(self, name, Signal(member.shape, name=name))
        self._members = pe_members(params)

    def elaborate(self, platform):
        from amaranth.hdl import ClockSignal, Instance, ResetSignal

        m = Module()
        kw = {"i_clk": ClockSignal(), "i_rst": ResetSignal()}
        for name, member in self._members.items():
            kw[("i_" if member.flow == Flow.In else "o_") + name] = getattr(self, name)
        m.submodules.pe = Instance(self.module, **kw)
        return m
