"""The stand-ins of `sparsa.models.hf_fast_init` give what the Hugging Face originals give, bit for bit."""

import pytest
import torch

from sparsa.models.hf_fast_init import fast_hf_init, sinusoid_encoding_table

mv = pytest.importorskip("transformers.models.videomae.modeling_videomae")


@pytest.mark.parametrize("n_position,d_hid", [(1, 2), (8, 16), (98, 384), (401, 768), (1568, 7)])
def test_videomae_sinusoid_table_is_bit_identical(n_position, d_hid):
    original = mv.get_sinusoid_encoding_table(n_position, d_hid)
    ours = sinusoid_encoding_table(n_position, d_hid)
    assert ours.dtype == original.dtype and ours.shape == original.shape
    assert torch.equal(ours, original)


def test_stand_in_is_scoped_and_a_built_model_matches():
    from transformers import VideoMAEConfig, VideoMAEModel

    original = mv.get_sinusoid_encoding_table
    cfg = VideoMAEConfig(image_size=32, patch_size=8, num_frames=4, tubelet_size=2, hidden_size=48,
                         num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    with fast_hf_init():
        assert mv.get_sinusoid_encoding_table is sinusoid_encoding_table
        fast = VideoMAEModel(cfg)
    assert mv.get_sinusoid_encoding_table is original  # restored
    assert torch.equal(fast.embeddings.position_embeddings, VideoMAEModel(cfg).embeddings.position_embeddings)
