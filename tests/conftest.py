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
