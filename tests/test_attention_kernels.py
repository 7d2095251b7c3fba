"""Block-sparse attention kernel: equals the masked dense reference, skips nothing it should keep."""

import pytest
import torch

from sparsa.attention import kernels
from sparsa.errors import SparsaError


def _data(B=1, H=2, N=64, D=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, N, D, generator=g) for _ in range(3)]


BACKENDS = ["torch", "cpp"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("block", [8, 16])
@pytest.mark.parametrize("empty_row", [False, True])
def test_kernel_equals_masked_reference(backend, block, empty_row):
    if backend == "cpp" and kernels.cpu_extension() is None:
        pytest.skip(f"C++ kernel unavailable: {kernels._ext_error}")
    q, k, v = _data()
    NB = 64 // block
    mask = kernels.random_block_mask(1, 2, NB, 0.25, seed=1)
    if empty_row:
        mask[0, 1, 2] = False  # a block-row with nothing kept outputs zeros
    out = kernels.block_sparse_attention(q, k, v, mask, block, backend=backend)
    ref = kernels.masked_reference(q, k, v, mask, block)
    assert torch.allclose(out.double(), ref, atol=1e-5)
    if empty_row:
        assert torch.equal(out[0, 1, 2 * block:3 * block], torch.zeros(block, 16))


@pytest.mark.parametrize("backend", BACKENDS)
def test_grouped_2x2_blocks_equal_reference(backend):
    if backend == "cpp" and kernels.cpu_extension() is None:
        pytest.skip(f"C++ kernel unavailable: {kernels._ext_error}")
    q, k, v = _data(N=32)
    fine = kernels.random_block_mask(1, 2, 16, 0.3, seed=2)  # 2x2 blocks
    tile, fm, bq = kernels.grouped_mask(fine, 2, 4)
    out = kernels.block_sparse_attention(q, k, v, tile, 2, fine_mask=fm, block_q=bq, backend=backend)
    ref = kernels.masked_reference(q, k, v, fine, 2)
    assert torch.allclose(out.double(), ref, atol=1e-5)


def test_kernel_bad_input():
    q, k, v = _data(N=60)
    with pytest.raises(SparsaError, match="multiple"):
        kernels.block_sparse_attention(q, k, v, torch.ones(1, 2, 4, 4, dtype=torch.bool), 16)
    q, k, v = _data()
    with pytest.raises(SparsaError, match="mask"):
        kernels.block_sparse_attention(q, k, v, torch.ones(1, 2, 3, 3, dtype=torch.bool), 16)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("group", [1, 4])
def test_varying_kept_counts_and_batched_tiles(backend, group):
    """HDP-like masks keep a different number of key blocks per row (0 included); batching runs of
    equal-count tiles into one GEMM call (group > 1) must not change the result."""
    if backend == "cpp" and kernels.cpu_extension() is None:
        pytest.skip(f"C++ kernel unavailable: {kernels._ext_error}")
    q, k, v = _data(B=2, N=64)
    g = torch.Generator().manual_seed(3)
    mask = torch.rand(2, 2, 8, 8, generator=g) < 0.4
    mask[0, 0, 1] = False
    mask[1, 1, :4] = True  # a run of equal counts next to varying ones
    mask[1, 1, :4, 4:] = False
    out = kernels.block_sparse_attention(q, k, v, mask, 8, backend=backend, group=group)
    ref = kernels.masked_reference(q, k, v, mask, 8)
    assert torch.allclose(out.double(), ref, atol=1e-5)
    assert torch.equal(out[0, 0, 8:16], torch.zeros(8, 16))
