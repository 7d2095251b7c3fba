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
