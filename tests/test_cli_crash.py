"""An error nobody foresaw reaches the user as one message, never a traceback: a failure in the model's own
code says which input options to give, anything else is named a bug in sparsa; SPARSA_TRACEBACK=1 lets it
through for a bug report."""

import sys

import pytest
import torch
import transformers as tf

import sparsa.cli
from sparsa.cli import model_cmds


def _main(monkeypatch, capsys, *args) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["sparsa", *args])
    with pytest.raises(SystemExit) as e:
        sparsa.cli.main()
    return e.value.code, " ".join(capsys.readouterr().err.split())  # rich wraps lines at the console width


def _boom(*a, **k):
    raise RuntimeError("boom in a helper")


def test_a_bug_in_sparsa_is_one_message_that_asks_for_a_report(monkeypatch, capsys):
    monkeypatch.setattr(model_cmds, "cost_summary", _boom)
    monkeypatch.delenv("SPARSA_TRACEBACK", raising=False)
    code, err = _main(monkeypatch, capsys, "info", "tiny-cnn")
    assert code == 3
    assert "internal error: RuntimeError: boom in a helper" in err and "test_cli_crash.py" in err
    assert "SPARSA_TRACEBACK=1" in err and "Traceback" not in err


def test_the_traceback_is_let_through_on_request(monkeypatch):
    monkeypatch.setattr(model_cmds, "cost_summary", _boom)
    monkeypatch.setenv("SPARSA_TRACEBACK", "1")
    monkeypatch.setattr(sys, "argv", ["sparsa", "info", "tiny-cnn"])
    with pytest.raises(RuntimeError, match="boom in a helper"):
        sparsa.cli.main()


def test_a_model_that_takes_one_length_fails_in_its_own_code_and_works_at_that_length(monkeypatch, capsys, tmp_path):
    # Nystromformer's landmark attention reshapes the sequence into segment_means_seq_len: it takes that
    # length only, and sparsa's default text length (128, or the position limit: 40 here) is another
    torch.manual_seed(0)
    folder = tmp_path / "nystromformer"
    tf.NystromformerModel(tf.NystromformerConfig(vocab_size=100, max_position_embeddings=40, hidden_size=32,
                                                 num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                                 num_landmarks=4, segment_means_seq_len=12)).save_pretrained(folder)
    monkeypatch.delenv("SPARSA_TRACEBACK", raising=False)
    code, err = _main(monkeypatch, capsys, "prune", str(folder), "--ffn", "0.5", "--out", str(tmp_path / "p"))
    assert code == 3 and "Traceback" not in err
    assert "the model's own code failed" in err and "modeling_nystromformer.py" in err and "--seq-len" in err
    assert "run by sparsa/metrics/cost.py" in err  # the step that ran the model: counting MACs
    assert not (tmp_path / "p").exists()
    code, _ = _main(monkeypatch, capsys, "prune", str(folder), "--ffn", "0.5", "--seq-len", "12",
                    "--out", str(tmp_path / "p"))
    assert code in (0, None) and (tmp_path / "p" / "model.safetensors").is_file()


def test_running_out_of_memory_says_so(monkeypatch, capsys):
    def oom(*a, **k):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:121] DefaultCPUAllocator: can't allocate memory: you tried "
                           "to allocate 9000000000000 bytes")

    monkeypatch.setattr(model_cmds, "cost_summary", oom)
    monkeypatch.delenv("SPARSA_TRACEBACK", raising=False)
    code, err = _main(monkeypatch, capsys, "info", "tiny-cnn")
    assert code == 3 and err.startswith("error: ran out of memory") and "smaller model" in err
