"""The unit registry: how to build each RTL unit and how to make its co-simulation vectors.

Expected values are computed only by the golden model (`sparsa.attention.fixedpoint`/`hdp`).
"""

from __future__ import annotations

import torch

from sparsa.attention import fixedpoint as fx
from sparsa.attention import hdp
from sparsa.errors import SparsaError
from sparsa.hw.rtl.unit_spec import Batch, UnitSpec
from sparsa.hw.rtl.params import RtlParams
from sparsa.hw.rtl.vectors import CODE_KINDS, codes, rand, randint


# -- PE and PE array --------------------------------------------------------------------------


def golden_tile(qQ: torch.Tensor, qK: torch.Tensor, p: RtlParams, approx: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Accumulators and 2x2 block importances of one output tile, from the golden model.

    qQ [R, L], qK [C, L] codes. Integer pass: A = I_Q I_K^T; approximation pass: T (docs/algorithms.md §5.1 step 8)."""
    IQ, FQ = fx.split_int_frac(qQ, p.frac_bits, p.split)
    IK, FK = fx.split_int_frac(qK, p.frac_bits, p.split)
    A = fx.int_matmul(IQ, IK.T)
    acc = hdp.approx_scores_int(IQ, FQ, IK, FK, p.frac_bits, approx=True, A_int=A)[0] if approx else A
    imp = hdp.block_importance(acc, p.block, torch.ones_like(acc, dtype=torch.bool), "abs")
    return acc, imp


def _tile_batch(p: RtlParams, gen: torch.Generator, n: int, rows: int, cols: int, array: bool) -> Batch:
    """n dot-product tiles of 2*rows Q rows by 2*cols K rows, back to back with random bubbles."""
    R, C = 2 * rows, 2 * cols
    trace: list[dict[str, int]] = []
    expect: dict[int, dict[str, int]] = {}
    kinds: dict[str, int] = {}
    qn = (lambda r: f"q_{r}") if array else (lambda r: f"q{r}")
    kn = (lambda c: f"k_{c}") if array else (lambda c: f"k{c}")
    lo, hi = fx.qmin(p.total_bits), fx.qmax(p.total_bits)
    for v in range(n):
        kind = CODE_KINDS[v % len(CODE_KINDS)]
        mode = (v // len(CODE_KINDS)) % 2
        # mostly the full D_h; every 4th vector a shorter dot product (first/last handling)
        length = p.head_dim if v % 4 else randint(gen, 1, p.head_dim)
        qQ = codes(p, gen, (R, length), kind)
        qK = codes(p, gen, (C, length), kind)
        for k in range(length):
            if rand(gen) < 0.1:  # a bubble: garbage on the data ports and flags, valid low
                bubble = {"valid": 0, "first": randint(gen, 0, 1), "last": randint(gen, 0, 1)}
                bubble.update({qn(r): randint(gen, lo, hi) for r in range(R)})
                trace.append(bubble)
            cyc = {"valid": 1, "first": int(k == 0), "last": int(k == length - 1), "mode": mode}
            cyc.update({qn(r): int(qQ[r, k]) for r in range(R)})
            cyc.update({kn(c): int(qK[c, k]) for c in range(C)})
            trace.append(cyc)
        acc, imp = golden_tile(qQ, qK, p, approx=bool(mode))
        if array:
            exp = {f"acc_{r}_{c}": int(acc[r, c]) for r in range(R) for c in range(C)}
            exp.update({f"imp_{i}_{j}": int(imp[i, j]) for i in range(rows) for j in range(cols)})
        else:
            exp = {f"acc{r}{c}": int(acc[r, c]) for r in range(2) for c in range(2)}
            exp["importance"] = int(imp[0, 0])
        exp["out_valid"] = 1
        expect[len(trace) - 1] = exp
        key = f"{kind}/{'approx' if mode else 'int'}"
        kinds[key] = kinds.get(key, 0) + 1
    return Batch(trace, expect, n, kinds)


def _build_pe(p: RtlParams, split: str | None = None):
    from sparsa.hw.rtl.pe import PE

    return PE(p, split=split)


def _build_pe_array(p: RtlParams, split: str | None = None):
    from sparsa.hw.rtl.pe_array import PEArray

    return PEArray(p, split=split)


def _pe_batch(p, gen, n):
    return _tile_batch(p, gen, n, 1, 1, array=False)


def _pe_array_batch(p, gen, n):
    return _tile_batch(p, gen, n, p.pe_rows, p.pe_cols, array=True)


UNITS: dict[str, UnitSpec] = {}


def register(spec: UnitSpec) -> None:
    UNITS[spec.name] = spec


register(
    UnitSpec(
        "pe",
        "integer MAC PE, one 2x2 output block, int/frac approximation path, block importance",
        _build_pe,
        _pe_batch,
        strobe="out_valid",
        default_overrides={"head_dim": 8},
    )
)
register(
    UnitSpec(
        "pe_array",
        "rows x cols output-stationary PE array (broadcast Q rows / K rows)",
        _build_pe_array,
        _pe_array_batch,
        strobe="out_valid",
        default_overrides={"head_dim": 8},
    )
)


# -- sparsity engine --------------------------------------------------------------------------

SE_KINDS = ("random", "ties", "padded", "pruned_head", "saturated", "zero", "rho_extreme")


def _se_head(p: RtlParams, gen: torch.Generator, kind: str):
    """One head's integer pass from the golden model: (theta, valid blocks, mask, theta_H, keep, rho_q, tau)."""
    nb_max = p.max_blocks
    n_tok = randint(gen, 1, 2 * nb_max)
    span = 2.0 ** (p.total_bits - 1 - p.frac_bits)
    scale = 4 * span if kind == "saturated" else span / 2
    q = (torch.rand((1, 1, n_tok, p.head_dim), generator=gen, dtype=torch.float64) * 2 - 1) * scale
    k = (torch.rand((1, 1, n_tok, p.head_dim), generator=gen, dtype=torch.float64) * 2 - 1) * scale
    if kind == "ties":  # identical keys: every block of a row has the same importance
        k = k[:, :, :1].expand_as(k).clone()
    if kind == "zero":
        q = torch.zeros_like(q)
    valid = torch.ones((1, n_tok), dtype=torch.bool)
    if kind == "padded":  # trailing padding tokens: whole block-rows with no valid block (all pruned)
        valid[0, randint(gen, 1, n_tok) :] = False
        if n_tok > 2:
            valid[0, -1] = False
    rho_b = round(rand(gen) * 2 - 1, 3)
    if kind == "rho_extreme":
        rho_b = [-1.0, 0.0, 1.0][randint(gen, 0, 2)]
    cfg0 = hdp.HDPConfig(frac_bits=p.frac_bits, total_bits=p.total_bits, block=p.block, split=p.split, rho_b=rho_b)
    theta_h0 = int(hdp.block_masks_int(q, k, cfg0, valid)["head_importance"][0, 0])
    tau_choice = randint(gen, 0, 3)
    if kind == "pruned_head":
        tau = theta_h0 + randint(gen, 1, 50)
    elif tau_choice == 0:
        tau = None
    elif tau_choice == 1:
        tau = theta_h0  # tie: kept (theta_H >= tau)
    else:
        tau = int(theta_h0 * (0.5 + rand(gen)))
    cfg = cfg0.with_(tau_h=tau)
    ints = hdp.block_masks_int(q, k, cfg, valid)
    return ints, cfg, tau


def _se_batch(p: RtlParams, gen: torch.Generator, n: int) -> Batch:
    W = p.importance_bits  # the SE's theta port width
    trace: list[dict[str, int]] = []
    expect: dict[int, dict[str, int]] = {}
    kinds: dict[str, int] = {}
    rows_done = 0
    h = 0
    while rows_done < n:
        kind = SE_KINDS[h % len(SE_KINDS)]
        h += 1
        ints, cfg, tau = _se_head(p, gen, kind)
        theta, vblk, mask = ints["theta"][0, 0], ints["vblk"][0], ints["block_mask"][0, 0]
        if int(theta.max()) >= 1 << W:
            raise SparsaError(f"block importance {int(theta.max())} does not fit the SE's {W}-bit theta port")
        nb = theta.shape[-1]
        for r in range(nb):
            for c in range(nb):
                if rand(gen) < 0.05:  # bubble
                    trace.append({"theta_valid": 0, "end_r": randint(gen, 0, 1), "end_h": randint(gen, 0, 1)})
                last_r = c == nb - 1
                trace.append(
                    {
                        "theta_valid": 1,
                        "theta": int(theta[r, c]),
                        "block_valid": int(vblk[r, c]),
                        "end_r": int(last_r),
                        "end_h": int(last_r and r == nb - 1),
                        "rho_q": cfg.rho_q,
                        "tau": 0 if tau is None else int(tau),
                        "tau_en": int(tau is not None),
                    }
                )
            t = len(trace) - 1  # END_R sampled here; mask column c appears at t + 1 + c
            for c in range(nb):
                e = expect.setdefault(t + 1 + c, {})
                e.update(
                    mask_valid=1, mask_bit=int(mask[r, c]), mask_col=c, mask_last=int(c == nb - 1), out_valid=1
                )
        t_h = len(trace) - 1
        e = expect.setdefault(t_h, {})  # registered on the END_H edge
        e.update(head_valid=1, head_skip=int(not bool(ints["head_mask"][0, 0])), out_valid=1)
        e["theta_h"] = int(ints["head_importance"][0, 0])
        # the last row's mask streams out for nb cycles; a head with shorter rows must not end a row
        # before that (within a head all rows have equal length, so rows run back to back)
        trace.extend({"theta_valid": 0} for _ in range(nb))
        rows_done += nb
        kinds[kind] = kinds.get(kind, 0) + nb
    trace.extend({"theta_valid": 0} for _ in range(p.max_blocks + 4))  # drain the last mask
    return Batch(trace, expect, rows_done, kinds)


def _build_se(p: RtlParams, strict: bool = False):
    from sparsa.hw.rtl.sparsity_engine import SparsityEngine

    return SparsityEngine(p, strict=strict)


register(
    UnitSpec(
        "sparsity_engine",
        "2x2 block importance stream -> row min/max/sum, bit-exact rho_q threshold, keep-mask, END_R/END_H, head skip",
        _build_se,
        _se_batch,
        strobe="out_valid",
        default_overrides={"head_dim": 8, "max_blocks": 8},
    )
)


# -- softmax unit -----------------------------------------------------------------------------

SOFTMAX_KINDS = ("scores", "random", "ties", "all_pruned", "single_kept", "wide_range", "extreme")


def _softmax_row(p: RtlParams, gen: torch.Generator, kind: str, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One row (x scores in Q.S, keep bits). `scores` rows come through the golden model from codes."""
    n = randint(gen, 1, max_len)
    lim = 1 << (p.x_bits - 2)
    if kind == "scores":  # q.k of random codes -> T -> scaled score x, as the co-processor produces them
        cfg = p.hdp_config()
        qQ = codes(p, gen, (1, p.head_dim), CODE_KINDS[randint(gen, 0, len(CODE_KINDS) - 1)])
        qK = codes(p, gen, (n, p.head_dim), CODE_KINDS[randint(gen, 0, len(CODE_KINDS) - 1)])
        IQ, FQ = fx.split_int_frac(qQ, p.frac_bits, p.split)
        IK, FK = fx.split_int_frac(qK, p.frac_bits, p.split)
        T, t_frac = hdp.approx_scores_int(IQ, FQ, IK, FK, p.frac_bits, cfg.approx)
        x = hdp.scale_scores_int(T, t_frac, p.head_dim, p.score_bits)[0]
    elif kind == "random":
        x = torch.randint(-(8 << p.score_bits), (8 << p.score_bits) + 1, (n,), generator=gen)
    elif kind == "ties":
        x = torch.full((n,), randint(gen, -(4 << p.score_bits), 4 << p.score_bits), dtype=torch.int64)
        x[torch.rand((n,), generator=gen) < 0.3] -= randint(gen, 0, 1 << p.score_bits)
    elif kind == "wide_range":  # many elements beyond k > 30 (exp underflows to 0)
        x = torch.randint(-(40 << p.score_bits), 1, (n,), generator=gen)
    else:  # extreme / all_pruned / single_kept: the ends of the x word
        pool = torch.tensor([-lim, lim - 1, 0, -1, 1, lim // 2])
        x = pool[torch.randint(0, len(pool), (n,), generator=gen)]
    keep = torch.rand((n,), generator=gen) < 0.7
    if kind == "all_pruned":
        keep[:] = False
    if kind == "single_kept":
        keep[:] = False
        keep[randint(gen, 0, n - 1)] = True
    if kind == "extreme":  # largest spread between kept scores that still fits the unit's x word
        keep[:] = True
    return x, keep


def _softmax_batch(p: RtlParams, gen: torch.Generator, n: int) -> Batch:
    max_len = 2 * p.max_blocks
    cfg = p.hdp_config()
    trace: list[dict[str, int]] = []
    expect: dict[int, dict[str, int]] = {}
    kinds: dict[str, int] = {}
    lim = 1 << (p.x_bits - 1)
    for v in range(n):
        kind = SOFTMAX_KINDS[v % len(SOFTMAX_KINDS)]
        x, keep = _softmax_row(p, gen, kind, max_len)
        if bool(keep.any()) and int(x[keep].max() - x[keep].min()) >= lim:
            x = x.clamp(-(lim // 2), lim // 2 - 1)  # x - max must fit the unit's x_bits+1 difference
        if int(x.max()) >= lim or int(x.min()) < -lim:
            raise SparsaError(f"score {int(x.abs().max())} does not fit the softmax unit's {p.x_bits}-bit x port")
        P = hdp.int_softmax(x[None], keep[None], cfg)[0]
        L = x.shape[0]
        for c in range(L):
            trace.append({"x_valid": 1, "x": int(x[c]), "keep": int(keep[c]), "end_r": int(c == L - 1)})
        t = len(trace) - 1  # END_R sampled here; P[c] appears at t + 3 + L + c
        for c in range(L):
            expect[t + 3 + L + c] = {"p_valid": 1, "p": int(P[c]), "p_col": c, "p_last": int(c == L - 1)}
        trace.extend({"x_valid": 0, "end_r": randint(gen, 0, 1)} for _ in range(2 * L + 3 + randint(gen, 0, 2)))
        kinds[kind] = kinds.get(kind, 0) + 1
    return Batch(trace, expect, n, kinds)


def _build_softmax(p: RtlParams, rounding: str = "floor"):
    from sparsa.hw.rtl.softmax import SoftmaxUnit

    return SoftmaxUnit(p, rounding=rounding)


register(
    UnitSpec(
        "softmax",
        "integer softmax: quadratic exp, linear reciprocal, fixed point (golden hdp.int_softmax)",
        _build_softmax,
        _softmax_batch,
        strobe="p_valid",
        default_overrides={"head_dim": 8, "max_blocks": 4},
    )
)


# -- N-core parallel wrapper --------------------------------------------------------------------


def seed_lane_model(inputs: list[int], resets: list[bool], p: RtlParams) -> list[int]:
    """Seed 000's `parallel_compute` lane (docs/algorithms.md §2.5), cycle by cycle: data_reg <= data_in;
    result_out <= data_reg + addend (mod 2^out_bits); an asserted active-low reset holds both at 0.
    This is the seed's own placeholder operation, which the HDP golden model does not contain."""
    data_reg = result = 0
    out = []
    for x, rst in zip(inputs, resets):
        if rst:
            data_reg = result = 0
        else:
            data_reg, result = x, (data_reg + p.lane_addend) % (1 << p.lane_out_bits)
        out.append(result)
    return out


def _ncore_batch(p: RtlParams, gen: torch.Generator, n: int) -> Batch:
    if p.lane_kind == "seed":
        return _seed_lanes_batch(p, gen, n)
    return _pe_cores_batch(p, gen, n)


def _seed_lanes_batch(p: RtlParams, gen: torch.Generator, n: int) -> Batch:
    """n cycles of all lanes: random and extreme (0, all ones) inputs, with async reset pulses."""
    top = (1 << p.lane_in_bits) - 1
    cycles = n
    resets = [bool(rand(gen) < 0.03) for _ in range(cycles)]
    lanes = []
    for _ in range(p.cores):
        xs = [randint(gen, 0, top) if rand(gen) < 0.6 else [0, top][randint(gen, 0, 1)] for _ in range(cycles)]
        lanes.append(xs)
    trace = []
    for t in range(cycles):
        cyc = {"rst_n": int(not resets[t])}
        cyc.update({f"data_in_{i}": lanes[i][t] for i in range(p.cores)})
        trace.append(cyc)
    expect: dict[int, dict[str, int]] = {t: {} for t in range(cycles)}
    for i in range(p.cores):
        for t, r in enumerate(seed_lane_model(lanes[i], resets, p)):
            expect[t][f"result_out_{i}"] = r
    return Batch(trace, expect, n, {"cycles": cycles, "reset_cycles": sum(resets)})


def _pe_cores_batch(p: RtlParams, gen: torch.Generator, n: int) -> Batch:
    """Blocks on all cores in lock step (one input-register stage, then each core's PE)."""
    trace: list[dict[str, int]] = []
    expect: dict[int, dict[str, int]] = {}
    kinds: dict[str, int] = {}
    done = 0
    v = 0
    while done < n:
        kind = CODE_KINDS[v % len(CODE_KINDS)]
        mode = (v // len(CODE_KINDS)) % 2
        v += 1
        length = p.head_dim if v % 3 else randint(gen, 1, p.head_dim)
        tiles = [(codes(p, gen, (2, length), kind), codes(p, gen, (2, length), kind)) for _ in range(p.cores)]
        for k in range(length):
            cyc: dict[str, int] = {}
            for i, (qQ, qK) in enumerate(tiles):
                cyc.update({f"c{i}_valid": 1, f"c{i}_first": int(k == 0), f"c{i}_last": int(k == length - 1)})
                cyc.update({f"c{i}_mode": mode, f"c{i}_q0": int(qQ[0, k]), f"c{i}_q1": int(qQ[1, k])})
                cyc.update({f"c{i}_k0": int(qK[0, k]), f"c{i}_k1": int(qK[1, k])})
            trace.append(cyc)
        exp: dict[str, int] = {}
        for i, (qQ, qK) in enumerate(tiles):
            acc, imp = golden_tile(qQ, qK, p, approx=bool(mode))
            exp.update({f"c{i}_acc{r}{c}": int(acc[r, c]) for r in range(2) for c in range(2)})
            exp[f"c{i}_importance"] = int(imp[0, 0])
            exp[f"c{i}_out_valid"] = 1
        expect[len(trace)] = exp  # one cycle later than a bare PE: the input register stage
        trace.append({f"c{i}_valid": 0 for i in range(p.cores)})
        done += p.cores
        key = f"{kind}/{'approx' if mode else 'int'}"
        kinds[key] = kinds.get(key, 0) + p.cores
    return Batch(trace, expect, done, kinds)


def _build_ncore(p: RtlParams, split: str | None = None):
    from sparsa.hw.rtl.ncore import ParallelCores

    return ParallelCores(p, split=split)


register(
    UnitSpec(
        "ncore",
        "seed 000's N-lane parallel block, generalised (lanes = seed adders or HDP PEs), async active-low reset",
        _build_ncore,
        _ncore_batch,
        strobe=None,
        default_overrides={"head_dim": 8},
        default_preset="seed000",
    )
)
