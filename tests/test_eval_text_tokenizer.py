"""A text model saved without its tokenizer: every text evaluation path refuses it clearly."""

import pytest

from sparsa.errors import SparsaError


def test_attention_eval_of_a_text_model_without_tokenizer_is_a_clear_error():
    # HDP evaluation embeds the sentences itself; it used to call the missing tokenizer (TypeError, exit 3)
    from sparsa.attention.evaluate import evaluate_attention
    from sparsa.models.tiny import tiny_model

    lm = tiny_model("bert")
    assert lm.tokenizer is None
    with pytest.raises(SparsaError, match="tokenizer"):
        evaluate_attention(lm, "hdp", data=["a sentence", "another one"])


class _Tok:
    """A stand-in tokenizer: ids from word lengths, padded to the longest text."""

    def __call__(self, texts, padding=True, truncation=True, max_length=128, return_tensors="pt"):
        import torch

        rows = [[5 + len(w) for w in t.split()][:max_length] for t in texts]
        n = max(len(r) for r in rows)
        return {"input_ids": torch.tensor([r + [0] * (n - len(r)) for r in rows]),
                "attention_mask": torch.tensor([[1] * len(r) + [0] * (n - len(r)) for r in rows])}


def test_text_classifier_fidelity_compares_class_scores():
    # a ...ForSequenceClassification has no last_hidden_state: `sparsa eval` of one failed with exit 3
    import torch
    import transformers as tf

    from sparsa.metrics import fidelity
    from sparsa.models import from_module

    torch.manual_seed(0)
    cfg = tf.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=40, num_labels=3)
    clf = from_module(tf.BertForSequenceClassification(cfg).eval())
    r = fidelity(clf, clf, ["a short text", "and a somewhat longer one here"], _Tok())
    assert r["cosine_min"] > 0.9999 and r["top1_agreement"] == 1.0
    base = from_module(tf.BertModel(cfg).eval())
    with pytest.raises(SparsaError, match="class scores .* embeddings"):
        fidelity(clf, base, ["a text"], _Tok())
