"""Sparsity engine (docs/algorithms.md §5.1 steps 6–7, §5.5): row thresholds, keep-mask, END_R / END_H, head skip.

Input: one block importance theta per cycle (`theta_valid`), with `block_valid` (False for padding
blocks, which are excluded from every statistic and never kept), `end_r` on the last block of a
block-row and `end_h` on the last block of the head. The SE buffers the row (ping-pong memory of
2 x max_blocks words, so the next row streams in while this one's mask streams out), tracks the
row's n, sum, max and min, and on END_R evaluates the bit-exact rule of the golden `row_keep_mask`:
  rho_q >= 0: keep iff 256*n*theta >= rho_q*n*max + (256 - rho_q)*sum
  rho_q <  0: keep iff 256*n*theta >= -rho_q*n*min + (256 + rho_q)*sum
one block per cycle (`mask_valid`, `mask_bit`, `mask_col`, `mask_last`). It sums theta over the head
(theta_H, equal to sum |A| over valid elements) and on END_H raises `head_valid` with
`head_skip` = theta_H < tau (when `tau_en`; tau is the integer ceil(tau_H), as in `head_keep`).
Rows of one head must have equal length (they do: NB blocks each).
"""

from __future__ import annotations

import math

from amaranth.hdl import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from sparsa.hw.rtl.params import RtlParams


class SparsityEngine(wiring.Component):
    def __init__(self, params: RtlParams, *, strict: bool = False, theta_bits: int | None = None):
        self.params = params
        self.strict = strict  # mutation: '>' instead of '>=' (ties pruned), for the mismatch test
        self.W = theta_bits or params.importance_bits
        self.nb = max(1, math.ceil(math.log2(params.max_blocks + 1)))
        self.cb = max(1, math.ceil(math.log2(params.max_blocks)))
        self.hb = self.W + 2 * self.nb  # theta_H over at most max_blocks^2 blocks
        super().__init__(
            wiring.Signature(
                {
                    "theta_valid": In(1),
                    "theta": In(unsigned(self.W)),
                    "block_valid": In(1),
                    "end_r": In(1),
                    "end_h": In(1),
                    "rho_q": In(signed(params.rho_bits)),
                    "tau": In(unsigned(self.hb)),
                    "tau_en": In(1),
                    "mask_valid": Out(1),
                    "mask_bit": Out(1),
                    "mask_col": Out(unsigned(self.cb)),
                    "mask_last": Out(1),
                    "head_valid": Out(1),
                    "head_skip": Out(1),
                    "theta_h": Out(unsigned(self.hb)),
                    "out_valid": Out(1),
                }
            )
        )

    def elaborate(self, platform):
        m = Module()
        p, W, nb, cb = self.params, self.W, self.nb, self.cb
        maxv = (1 << W) - 1

        m.submodules.buf = buf = Memory(shape=unsigned(W + 1), depth=2 * p.max_blocks, init=[])
        wp = buf.write_port()
        rp = buf.read_port()

        # --- accumulation of the incoming row ------------------------------------------------
        half = Signal()  # which half of the buffer the incoming row uses
        col = Signal(range(p.max_blocks + 1))
        n = Signal(nb)
        total = Signal(W + nb)
        mx = Signal(W)
        mn = Signal(W, init=maxv)
        th = Signal(self.hb)

        take = self.theta_valid & self.block_valid
        n_next = Signal.like(n)
        total_next = Signal.like(total)
        mx_next = Signal.like(mx)
        mn_next = Signal.like(mn)
        th_next = Signal.like(th)
        m.d.comb += [
            n_next.eq(n + take),
            total_next.eq(total + Mux(take, self.theta, 0)),
            mx_next.eq(Mux(take & (self.theta > mx), self.theta, mx)),
            mn_next.eq(Mux(take & (self.theta < mn), self.theta, mn)),
            th_next.eq(th + Mux(take, self.theta, 0)),
            wp.addr.eq(Mux(half, p.max_blocks, 0) + col),
            wp.data.eq(self.theta | (self.block_valid << W)),
            wp.en.eq(self.theta_valid),
        ]

        # --- latched statistics of the row being emitted ---------------------------------------
        e_half = Signal()
        e_len = Signal(range(p.max_blocks + 1))
        e_n = Signal(nb)
        e_total = Signal(W + nb)
        e_ext = Signal(W)
        e_rho_abs = Signal(9)
        e_active = Signal()
        e_idx = Signal(range(p.max_blocks + 1))

        with m.If(self.theta_valid):
            with m.If(self.end_r):
                m.d.sync += [
                    col.eq(0),
                    half.eq(~half),
                    n.eq(0),
                    total.eq(0),
                    mx.eq(0),
                    mn.eq(maxv),
                    e_half.eq(half),
                    e_len.eq(col + 1),
                    e_n.eq(n_next),
                    e_total.eq(total_next),
                    e_ext.eq(Mux(self.rho_q >= 0, mx_next, mn_next)),
                    e_rho_abs.eq(Mux(self.rho_q >= 0, self.rho_q, -self.rho_q)),
                    e_active.eq(1),
                    e_idx.eq(0),
                ]
            with m.Else():
                m.d.sync += [col.eq(col + 1), n.eq(n_next), total.eq(total_next), mx.eq(mx_next), mn.eq(mn_next)]
            with m.If(self.end_h):
                m.d.sync += th.eq(0)
            with m.Else():
                m.d.sync += th.eq(th_next)

        # head decision, one cycle after END_H
        m.d.sync += self.head_valid.eq(self.theta_valid & self.end_h)
        with m.If(self.theta_valid & self.end_h):
            m.d.sync += [
                self.theta_h.eq(th_next),
                self.head_skip.eq(self.tau_en & (th_next < self.tau)),
            ]

        # --- emission: read the buffered row back, one block per cycle ----------------------
        with m.If(e_active & ~(self.theta_valid & self.end_r)):
            with m.If(e_idx + 1 == e_len):
                m.d.sync += e_active.eq(0)
            m.d.sync += e_idx.eq(e_idx + 1)
        m.d.comb += rp.addr.eq(Mux(e_half, p.max_blocks, 0) + e_idx)

        # pipeline registers aligned with the read data
        r_valid = Signal()
        r_col = Signal(cb)
        r_last = Signal()
        r_lhs_n = Signal(nb)
        r_rhs = Signal(W + nb + 10)
        rhs = Signal(W + nb + 10)
        m.d.comb += rhs.eq(e_rho_abs * e_n * e_ext + (Const(256, 9) - e_rho_abs) * e_total)
        m.d.sync += [
            r_valid.eq(e_active),
            r_col.eq(e_idx),
            r_last.eq(e_idx + 1 == e_len),
            r_lhs_n.eq(e_n),
            r_rhs.eq(rhs),
        ]
        word = rp.data
        theta_r = word[:W]
        valid_r = word[W]
        lhs = Signal(W + nb + 8)
        m.d.comb += lhs.eq((theta_r * r_lhs_n) << 8)
        keep = (lhs > r_rhs) if self.strict else (lhs >= r_rhs)
        m.d.comb += [
            self.mask_valid.eq(r_valid),
            self.mask_bit.eq(r_valid & valid_r & (r_lhs_n != 0) & keep),
            self.mask_col.eq(r_col),
            self.mask_last.eq(r_valid & r_last),
            self.out_valid.eq(self.mask_valid | self.head_valid),
        ]
        return m
