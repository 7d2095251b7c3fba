"""Softmax unit: the golden model's integer softmax (`hdp.int_softmax`), bit-exact (docs/algorithms.md §5.1 step 10).

Streaming, one row at a time, one element per cycle per phase:
  IN     x (Q.S score) and its keep bit arrive (`x_valid`, `end_r` on the last); the row is buffered
         and max over kept elements is tracked;
  EXP    per element: z = x - max, k = floor(-z / L2) (constant divider as multiply-shift, exact on
         the range where k <= 30; beyond it exp is 0), p = z + k*L2, the I-BERT quadratic
         poly = ((a*(p+b)^2) >> (16+2S-E)) + c, e = poly >> k; e overwrites x in the buffer; sum += e;
  RECIP  L = floor(log2 sum) (priority encoder), m = (sum << M) >> L in [2^M, 2^(M+1)),
         y = ((3 << M) - m) * 61681 >> 17 (linear reciprocal), optional Newton steps;
  OUT    P = (e * y) >> (M + L - prob_bits) per element (`p_valid`, `p_col`, `p_last`).
Rows with no kept element give P = 0. A new row may start once the previous one has been emitted
(`in_ready`).
"""

from __future__ import annotations

import math

import torch
from amaranth.hdl import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from sparsa.attention import hdp
from sparsa.errors import SparsaError
from sparsa.hw.rtl.params import RtlParams

ROUNDINGS = ("floor", "nearest")


def exp_constants(p: RtlParams) -> dict[str, int]:
    """The integer constants of `hdp.int_exp` for score_bits S and exp_bits E."""
    S, E = p.score_bits, p.exp_bits
    return {
        "l2": int(round(math.log(2) * 2**S)),
        "b": int(round(hdp.EXP_B * 2**S)),
        "a": int(round(hdp.EXP_A * 2**16)),
        "c": int(round(hdp.EXP_C * 2**E)),
        "sh": 16 + 2 * S - E,
    }


def divider_magic(l2: int, limit: int) -> tuple[int, int]:
    """(R, s) with floor(u*R >> s) == u // l2 for every 0 <= u < limit, checked exhaustively."""
    u = torch.arange(limit, dtype=torch.int64)
    for s in range(limit.bit_length(), 2 * limit.bit_length() + 8):
        r = -(-(1 << s) // l2)
        if torch.equal((u * r) >> s, u // l2):
            return r, s
    raise SparsaError(f"no exact multiply-shift divider for {l2} on [0, {limit})")


class SoftmaxUnit(wiring.Component):
    def __init__(self, params: RtlParams, *, rounding: str = "floor"):
        if rounding not in ROUNDINGS:
            raise SparsaError(f"rounding={rounding!r} is unknown", hint=f"choose one of {ROUNDINGS}")
        self.params = params
        self.rounding = rounding  # "nearest" is a mutation (the golden model floors), for the mismatch test
        self.max_len = 2 * params.max_blocks
        self.cb = max(1, math.ceil(math.log2(self.max_len)))
        self.pbits = params.prob_bits + 3
        super().__init__(
            wiring.Signature(
                {
                    "x_valid": In(1),
                    "x": In(signed(params.x_bits)),
                    "keep": In(1),
                    "end_r": In(1),
                    "in_ready": Out(1),
                    "p_valid": Out(1),
                    "p": Out(unsigned(self.pbits)),
                    "p_col": Out(unsigned(self.cb)),
                    "p_last": Out(1),
                }
            )
        )

    def elaborate(self, platform):
        m = Module()
        p = self.params
        S, E, M, Pb = p.score_bits, p.exp_bits, p.recip_bits, p.prob_bits
        K = exp_constants(p)
        limit = 31 * K["l2"]  # u >= limit means k > 30: exp is 0
        ub = limit.bit_length()
        R, s_div = divider_magic(K["l2"], limit)
        XW = p.x_bits
        EW = E + 2
        SW = EW + self.cb + 1

        m.submodules.buf = buf = Memory(shape=unsigned(XW + 1), depth=self.max_len, init=[])
        wp = buf.write_port()
        rp = buf.read_port()

        idx = Signal(range(self.max_len + 1))
        length = Signal(range(self.max_len + 1))
        mx = Signal(signed(XW))
        any_kept = Signal()
        total = Signal(SW)
        y = Signal(M + 3)
        L = Signal(range(SW + 1))
        d_valid = Signal()  # read data of the previous cycle is an element to process
        d_idx = Signal(range(self.max_len + 1))
        d_last = Signal()

        # --- exp datapath on the read word --------------------------------------------------
        x_r = Signal(signed(XW))
        keep_r = Signal()
        m.d.comb += [x_r.eq(rp.data[:XW]), keep_r.eq(rp.data[XW])]
        u = Signal(XW + 1)
        m.d.comb += u.eq(mx - x_r)
        k = Signal(6)
        uu = Signal(ub)
        m.d.comb += [uu.eq(u[:ub]), k.eq((uu * R) >> s_div)]
        pb = Signal(signed(ub + 2))
        m.d.comb += pb.eq(k * K["l2"] - uu + K["b"])
        poly = Signal(EW + 2)
        m.d.comb += poly.eq(((K["a"] * pb * pb) >> K["sh"]) + K["c"])
        e_val = Signal(EW)
        m.d.comb += e_val.eq(Mux(keep_r & (u < limit), poly >> k, 0))

        # --- reciprocal of the sum ------------------------------------------------------------
        s1 = Signal(SW)
        m.d.comb += s1.eq(Mux(total == 0, 1, total))
        lz = Signal(range(SW + 1))
        for b in range(SW):  # priority encoder: the highest set bit wins (later statements override)
            with m.If(s1[b]):
                m.d.comb += lz.eq(b)
        mq = Signal(M + 2)
        m.d.comb += mq.eq((s1 << M) >> lz)
        y0 = Signal(M + 3)
        m.d.comb += y0.eq((((3 << M) - mq) * hdp.RECIP_MAGIC) >> 17)
        ycur = y0
        for i in range(p.newton_steps):
            yn = Signal(M + 3, name=f"y_newton{i}")
            corr = Signal(signed(M + 4), name=f"corr{i}")
            m.d.comb += corr.eq((2 << M) - ((mq * ycur) >> M))
            m.d.comb += yn.eq((ycur * corr) >> M)
            ycur = yn

        # --- output datapath -------------------------------------------------------------------
        prod = Signal(EW + M + 3 + Pb)
        m.d.comb += prod.eq((rp.data[:EW] * y) << Pb)
        shift = Signal(range(SW + M + 1))
        m.d.comb += shift.eq(M + L)
        rounded = prod + ((Const(1, 1) << shift) >> 1) if self.rounding == "nearest" else prod
        pv = Signal(self.pbits)
        m.d.comb += pv.eq(rounded >> shift)

        m.d.comb += [rp.addr.eq(idx), wp.addr.eq(idx), wp.en.eq(0)]
        with m.FSM():
            with m.State("IN"):
                m.d.comb += [
                    self.in_ready.eq(1),
                    wp.data.eq(self.x.as_unsigned() | (self.keep << XW)),
                    wp.en.eq(self.x_valid),
                ]
                with m.If(self.x_valid):
                    with m.If(self.keep & (~any_kept | (self.x > mx))):
                        m.d.sync += [mx.eq(self.x), any_kept.eq(1)]
                    with m.If(self.end_r):
                        m.d.sync += [length.eq(idx + 1), idx.eq(0), total.eq(0), d_valid.eq(0)]
                        m.next = "EXP"
                    with m.Else():
                        m.d.sync += idx.eq(idx + 1)
            with m.State("EXP"):
                # address idx is read this cycle; the element read last cycle (d_idx) is processed now
                m.d.sync += [d_valid.eq(idx < length), d_idx.eq(idx), idx.eq(idx + 1)]
                with m.If(d_valid):
                    m.d.comb += [wp.addr.eq(d_idx), wp.data.eq(e_val), wp.en.eq(1)]
                    m.d.sync += total.eq(total + e_val)
                    with m.If(d_idx + 1 == length):
                        m.next = "RECIP"
            with m.State("RECIP"):
                m.d.sync += [y.eq(ycur), L.eq(lz), idx.eq(0), d_valid.eq(0)]
                m.next = "OUT"
            with m.State("OUT"):
                m.d.sync += [d_valid.eq(idx < length), d_idx.eq(idx), d_last.eq(idx + 1 == length), idx.eq(idx + 1)]
                with m.If(d_valid):
                    m.d.comb += [self.p_valid.eq(1), self.p.eq(pv), self.p_col.eq(d_idx), self.p_last.eq(d_last)]
                    with m.If(d_last):
                        m.d.sync += [idx.eq(0), any_kept.eq(0), d_valid.eq(0)]
                        m.next = "IN"
        return m
