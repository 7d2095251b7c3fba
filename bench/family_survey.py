"""Which Hugging Face families sparsa handles by structural discovery alone: tiny random configs of
encoders no adapter names (text, image, video, audio, conv), each tried on every step.

    PYTHONPATH=. python bench/family_survey.py [--only NAME ...]

Per family: the family sparsa picks; prune nothing (output bit-identical); prune half the heads and
FFN neurons, save, reload in a fresh discovery (identical output); INT8 weights (output cosine to the
float model) and reload; HDP masks through `collect_masks`; a simulation of the traced workload. A
step that sparsa refuses shows the start of its message; anything else (a traceback) is a bug.
Prints a markdown table (docs/models.md keeps the last one)."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
TEXT = dict(vocab_size=100, max_position_embeddings=40, **SMALL)
IMG = dict(image_size=16, patch_size=8, **SMALL)


def _families():
    import transformers as tf

    return {
        # text
        "ernie": lambda: tf.ErnieModel(tf.ErnieConfig(**TEXT)),
        "rembert": lambda: tf.RemBertModel(tf.RemBertConfig(input_embedding_size=16, output_embedding_size=16, **TEXT)),
        "albert": lambda: tf.AlbertModel(tf.AlbertConfig(embedding_size=16, **TEXT)),
        "megatron-bert": lambda: tf.MegatronBertModel(tf.MegatronBertConfig(**TEXT)),
        "roc-bert": lambda: tf.RoCBertModel(tf.RoCBertConfig(pronunciation_vocab_size=10, shape_vocab_size=10, **TEXT)),
        "mobilebert": lambda: tf.MobileBertModel(tf.MobileBertConfig(embedding_size=16, intra_bottleneck_size=32,
                                                                     true_hidden_size=32, **TEXT)),
        "convbert": lambda: tf.ConvBertModel(tf.ConvBertConfig(embedding_size=32, **TEXT)),
        "layoutlm": lambda: tf.LayoutLMModel(tf.LayoutLMConfig(**TEXT)),
        "nystromformer": lambda: tf.NystromformerModel(tf.NystromformerConfig(num_landmarks=4, segment_means_seq_len=12,
                                                                              **TEXT)),
        "modernbert": lambda: tf.ModernBertModel(tf.ModernBertConfig(pad_token_id=0, bos_token_id=1, eos_token_id=2,
                                                                     cls_token_id=1, sep_token_id=2, **TEXT)),
        "mpnet": lambda: tf.MPNetModel(tf.MPNetConfig(**TEXT)),
        "deberta": lambda: tf.DebertaModel(tf.DebertaConfig(**TEXT)),
        "deberta-v2": lambda: tf.DebertaV2Model(tf.DebertaV2Config(**TEXT)),
        "esm": lambda: tf.EsmModel(tf.EsmConfig(pad_token_id=1, **TEXT)),
        # image
        "dinov2": lambda: tf.Dinov2Model(tf.Dinov2Config(image_size=16, patch_size=8, hidden_size=32,
                                                         num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2)),
        "yolos": lambda: tf.YolosModel(tf.YolosConfig(**{**IMG, "image_size": [16, 16]}, num_detection_tokens=2)),
        "beit": lambda: tf.BeitModel(tf.BeitConfig(use_relative_position_bias=True, **IMG)),
        "data2vec-vision": lambda: tf.Data2VecVisionModel(tf.Data2VecVisionConfig(**IMG)),
        "vit_mae": lambda: tf.ViTMAEModel(tf.ViTMAEConfig(mask_ratio=0.0, **IMG)),
        "vit_msn": lambda: tf.ViTMSNModel(tf.ViTMSNConfig(**IMG)),
        "ijepa": lambda: tf.IJepaModel(tf.IJepaConfig(**IMG)),
        "clip_vision_model": lambda: tf.CLIPVisionModel(tf.CLIPVisionConfig(**IMG)),
        "siglip_vision_model": lambda: tf.SiglipVisionModel(tf.SiglipVisionConfig(**IMG)),
        "swinv2": lambda: tf.Swinv2Model(tf.Swinv2Config(image_size=16, patch_size=4, embed_dim=16, depths=[1, 1],
                                                         num_heads=[2, 2], window_size=2)),
        "hiera": lambda: tf.HieraModel(tf.HieraConfig(image_size=[32, 32], patch_size=[3, 3], patch_stride=[2, 2],
                                                      num_query_pool=1, patch_padding=[1, 1], embed_dim=16,
                                                      depths=[1, 1], num_heads=[1, 2],
                                                      query_stride=[2, 2], masked_unit_size=[4, 4])),
        "mobilevit": lambda: tf.MobileViTModel(tf.MobileViTConfig(image_size=32, hidden_sizes=[16, 16, 16],
                                                                  neck_hidden_sizes=[8, 8, 8, 8, 8, 8, 16])),
        "convnext": lambda: tf.ConvNextModel(tf.ConvNextConfig(num_stages=2, hidden_sizes=[8, 16], depths=[1, 1],
                                                               image_size=32)),
        # video
        "vivit": lambda: tf.VivitModel(tf.VivitConfig(image_size=16, num_frames=4, tubelet_size=[2, 8, 8], **SMALL)),
        "timesformer": lambda: tf.TimesformerModel(tf.TimesformerConfig(num_frames=2, **IMG)),
        # audio
        "wav2vec2": lambda: tf.Wav2Vec2Model(tf.Wav2Vec2Config(conv_dim=[8, 8], conv_stride=[5, 2], conv_kernel=[10, 3],
                                                               num_conv_pos_embeddings=4, **SMALL)),
        "hubert": lambda: tf.HubertModel(tf.HubertConfig(conv_dim=[8, 8], conv_stride=[5, 2], conv_kernel=[10, 3],
                                                         num_conv_pos_embeddings=4, **SMALL)),
        "audio-spectrogram-transformer": lambda: tf.ASTModel(tf.ASTConfig(num_mel_bins=16, max_length=16, patch_size=8,
                                                                          **SMALL)),
    }


def _first(y):
    return y if isinstance(y, torch.Tensor) else y.to_tuple()[0] if hasattr(y, "to_tuple") else y[0]


def _run(lm, x):
    torch.manual_seed(0)  # ViT-MAE shuffles patches at random in every forward
    with torch.no_grad():
        return _first(lm.model(**x))


def _why(e: Exception) -> str:
    from sparsa.errors import SparsaError

    if isinstance(e, SparsaError):
        return "refused: " + e.message[:150].replace("|", "/")
    return f"BUG {type(e).__name__}: {str(e)[:120]}".replace("|", "/")


def survey(name: str, build) -> dict[str, str]:
    from sparsa.attention import collect_masks
    from sparsa.hw.sim import simulate
    from sparsa.hw.workload import from_model
    from sparsa.models import discovery, from_module, load
    from sparsa.prune import PrunePlan, prune
    from sparsa.quant.stage import quantize_loaded

    row: dict[str, str] = {}
    torch.manual_seed(0)
    try:
        lm = from_module(build(), source=f"tiny-{name}")
        d = lm.describe()
        fixed = d.get("heads_fixed") or {}
        row["family"] = f"{lm.family} ({lm.modality}, {len(d['heads_per_layer'])} attn, {len(d['ffn_per_layer'])} FFN)"
        x = lm.example_inputs(batch=2, seq_len=12)
        y = _run(lm, x)
    except Exception as e:  # noqa: BLE001 - a survey: every outcome is reported
        row["family"] = _why(e)
        return row
    try:
        row["prune 0% exact"] = "ok" if torch.equal(_run(prune(lm, PrunePlan(heads=0.0, ffn=0.0)), x), y) else "DIFFERS"
    except Exception as e:  # noqa: BLE001
        row["prune 0% exact"] = _why(e)
    try:
        heads = 0.5 if lm.adapter.groups("heads") else 0.0
        small = prune(lm, PrunePlan(heads=heads, ffn=0.5 if lm.adapter.groups("ffn") else 0.0))
        ys = _run(small, x)
        with tempfile.TemporaryDirectory() as tmp:
            discovery._CACHE.clear()
            same = torch.equal(_run(load(small.save(Path(tmp) / "p")), x), ys)
        kept = "heads fixed: " + next(iter(fixed.values()))[:80] if fixed and not heads else "heads+FFN"
        row["prune 50% + reload"] = ("ok" if same else "DIFFERS") + f" ({kept})"
    except Exception as e:  # noqa: BLE001
        row["prune 50% + reload"] = _why(e)
    try:
        q, _ = quantize_loaded(lm.clone())
        yq = _run(q, x)
        cos = float(torch.nn.functional.cosine_similarity(yq.flatten().float(), y.flatten().float(), dim=0))
        with tempfile.TemporaryDirectory() as tmp:
            same = torch.equal(_run(load(q.save(Path(tmp) / "q")), x), yq)
        fit = f"cos {cos:.4f}" if y.abs().max() > 0 else "the tiny model's output is 0"
        row["INT8 + reload"] = f"{'ok' if same else 'DIFFERS'} ({fit})"
    except Exception as e:  # noqa: BLE001
        row["INT8 + reload"] = _why(e)
    try:
        masks = collect_masks(lm, x, "hdp")
        row["HDP"] = f"ok ({len(masks)} calls)"
    except Exception as e:  # noqa: BLE001
        row["HDP"] = _why(e)
    try:
        w = from_model(lm, inputs=lm.example_inputs(batch=1, seq_len=12))
        row["sim"] = "ok" if simulate(w, "systolic-32-os").macs == w.dense_macs else "MACs differ"
    except Exception as e:  # noqa: BLE001
        row["sim"] = _why(e)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="family names to try (default: all)")
    args = ap.parse_args()
    from sparsa.metrics.cpu import cpu_line

    print(cpu_line(), flush=True)  # where every figure below was measured
    import transformers

    print(f"transformers {transformers.__version__}, torch {torch.__version__}")
    cols = ["family", "prune 0% exact", "prune 50% + reload", "INT8 + reload", "HDP", "sim"]
    print("| model_type | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for name, build in _families().items():
        if args.only and name not in args.only:
            continue
        row = survey(name, build)
        print(f"| {name} | " + " | ".join(row.get(c, "-") for c in cols) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
