"""Shared pytest fixtures."""

import os

import pytest
import torch


@pytest.fixture
def fast_checkpoints(monkeypatch):
    """For tests that write many checkpoints of tiny models.

    Checkpoints fsync every file; on a busy shared disk that dominates a tiny run, and durability
    against power loss is not what these tests check (atomic replace still is). Tiny models on
    shared cores also run several times faster on one thread than on two (no spin-waits)."""
    monkeypatch.setattr(os, "fsync", lambda fd: None)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny_bert():
    """A random 2-layer BERT (width 64, 4 heads), shared by the simulator tests; files that need
    another size define their own `tiny_bert`, which overrides this one."""
    from transformers import BertConfig, BertModel

    from sparsa.models import from_module

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=1200, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=128, max_position_embeddings=128)
    return from_module(BertModel(cfg).eval(), config=cfg, source="tiny-bert-test")


@pytest.fixture(scope="session")
def tiny_text_folder_factory(tmp_path_factory):
    """make(hidden, ffn): a saved random 2-layer BERT (4 heads) with MiniLM's tokenizer, so recipes and the
    CLI take it by path like a real text model; the same seed and sizes give the same weights."""
    def make(hidden: int = 32, ffn: int = 64):
        from transformers import BertConfig, BertModel

        from sparsa.models import from_module, load

        tok = load("minilm").tokenizer
        torch.manual_seed(0)
        m = BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=hidden, num_hidden_layers=2,
                                 num_attention_heads=4, intermediate_size=ffn, max_position_embeddings=128)).eval()
        d = tmp_path_factory.mktemp("tiny_text") / "bert"
        from_module(m, tokenizer=tok, source="tiny").save(d)
        return d

    return make


@pytest.fixture(scope="module")
def tiny_text_folder(tiny_text_folder_factory):
    """The width-32 tiny text model folder (one per test module)."""
    return tiny_text_folder_factory()
