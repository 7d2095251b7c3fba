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
