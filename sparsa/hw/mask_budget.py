"""Memory bounds for recording dynamic-attention masks on a real model (`sparsa sim --attention`).

The recorded forward runs each attention call's integer emulation in head groups of at most
`sparsa.attention.hdp.HEAD_CHUNK_SCORES` score elements (`FAST_HEAD_CHUNK_SCORES` in the long-sequence
form), so its working set is bounded by a group, not
by the sequence: the plain int64 form holds 125 to 190 bytes per score of a group at the peak
(measured on MiniLM with HDP at 128 and 512 tokens: `SCORE_BYTES`), the long-sequence form
(`sparsa.attention.hdp_fast`: float32 products, fused row softmax) 10 to 20 (measured on 12 heads at
512 and 1,568 tokens: `FAST_SCORE_BYTES`). Each call's masks for all its heads (block mask, kept
elements and their concatenation: `LAYER_BYTES`) are joined once per layer; the block masks are then
kept for every layer (one byte per block, twice while they are copied out) and the simulator widens
one layer's to int64 (8 bytes per block). The batch is recorded in chunks of at most `CHUNK_SCORES`
score elements (a fixed number, so the masks do not depend on the machine), and the whole run is
refused, with the estimate, when it would take more than `MEMORY_FRACTION` of the memory available now.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from sparsa.errors import SparsaError

SCORE_BYTES = 200  # peak bytes per score of a head group, plain int64 form (measured, rounded up)
FAST_SCORE_BYTES = 40  # the same for the long-sequence form (measured 10-20, doubled for the allocator)
LAYER_BYTES = 3  # one call's masks over all its heads, per score (bool block mask, kept elements, a copy)
MASK_BYTES_PER_BLOCK = 2  # the kept masks of every layer, and their copy
SIM_BYTES_PER_BLOCK = 16  # one layer's masks as int64 (and a temporary) in the simulator
CHUNK_SCORES = 2**23  # score elements per recorded chunk (its masks: LAYER_BYTES each)
MEMORY_FRACTION = 0.5


def available_bytes() -> int | None:
    """Memory the system can give now (MemAvailable), or None where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


@dataclass(frozen=True)
class MaskPlan:
    chunk: int  # inputs recorded per forward
    estimate_bytes: int


def plan(*, batch: int, heads: int, tokens: int, layers: int, block: int = 1, grouped: bool = False,
         fast: bool = False) -> MaskPlan:
    """How to record masks for `batch` inputs of `tokens` tokens, or a `SparsaError` with the estimate.

    grouped: the method runs `hdp_attention_int`, which works in head groups (hdp, hdp-seed, int; the
    baselines hold all heads at once). fast: its configuration runs the long-sequence form
    (`sparsa.attention.hdp_fast.eligible`, on a model without an additive score bias)."""
    from sparsa.attention.hdp import FAST_HEAD_CHUNK_SCORES, HEAD_CHUNK_SCORES

    per_input = heads * tokens * tokens
    chunk = max(1, min(batch, CHUNK_SCORES // max(1, per_input)))
    blocks = batch * heads * (-(-tokens // block)) ** 2
    # the integer emulation's working set: one head group at a time where the method groups heads
    fast = fast and grouped
    group = min(chunk * per_input, FAST_HEAD_CHUNK_SCORES if fast else HEAD_CHUNK_SCORES) if grouped else chunk * per_input
    estimate = ((FAST_SCORE_BYTES if fast else SCORE_BYTES) * group + LAYER_BYTES * chunk * per_input
                + (MASK_BYTES_PER_BLOCK * layers + SIM_BYTES_PER_BLOCK) * blocks)
    avail = available_bytes()
    if avail is not None and estimate > MEMORY_FRACTION * avail:
        raise SparsaError(
            f"recording attention masks for batch {batch} x {tokens} tokens x {heads} heads x {layers} layers needs "
            f"about {estimate / 1e9:.1f} GB; this machine has {avail / 1e9:.1f} GB available "
            f"(the limit is {MEMORY_FRACTION:.0%} of it)",
            hint="use a smaller --batch or --seq-len",
        )
    return MaskPlan(chunk, estimate)


def collect_masks_chunked(collect, loaded, inputs: dict, method: str, chunk: int, **opts) -> list[dict]:
    """`collect(loaded, inputs, method, **opts)` over the batch in chunks of `chunk` inputs, the
    per-layer masks concatenated along the batch (as one call on the whole batch returns them)."""
    n = next(iter(inputs.values())).shape[0]
    if chunk >= n:
        return collect(loaded, inputs, method, **opts)
    parts = [collect(loaded, {k: v[i : i + chunk] for k, v in inputs.items()}, method, **opts) for i in range(0, n, chunk)]
    out = []
    for layer in zip(*parts):
        d = dict(layer[0])
        for key in ("block_mask", "head_mask", "valid_len"):
            d[key] = torch.cat([p[key] for p in layer], dim=0)
        d["stats"] = [p.get("stats") for p in layer]  # one summary per chunk
        out.append(d)
    return out
