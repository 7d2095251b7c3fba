"""Model families: a small registry of adapters that know where heads, FFN neurons and channels live.

Add a family without forking sparsa:

    from sparsa.models import FamilyAdapter, register_family, HeadGroup, FFNGroup

    class MyAdapter(FamilyAdapter):
        modality = "text"
        def head_groups(self): ...   # list[HeadGroup], one per attention layer
        def ffn_groups(self): ...    # list[FFNGroup], one per feed-forward block
        def example_inputs(self, batch=1, seq_len=None): ...  # kwargs for model(**inputs)

    register_family("mine", MyAdapter, hf_model_types=("my_model_type",), hf_class_prefixes=("MyModel",))

`hf_model_types` are the `config.model_type` values that select the family when loading a
Hugging Face folder; `hf_class_prefixes` allow-lists the `transformers` classes it may build
(e.g. "Bert" allows BertModel, BertForSequenceClassification). Non-HF modules use `detect`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from sparsa.errors import SparsaError
from sparsa.models.units import ChannelGroup, FFNGroup, HeadGroup


class FamilyAdapter:
    """Base adapter: subclasses list the model's prunable groups and make example inputs."""

    family: str = "?"
    modality: str = "text"  # "text" | "image" | "video"

    def __init__(self, model: nn.Module, config=None):
        self.model = model
        self.config = config if config is not None else getattr(model, "config", None)

    def head_groups(self) -> list[HeadGroup]:
        return []

    def ffn_groups(self) -> list[FFNGroup]:
        return []

    def after_surgery(self) -> None:
        """Called once pruning removed units from the model (e.g. to fit forwards to the new shapes)."""

    def channel_groups(self) -> list[ChannelGroup]:
        return []

    def groups(self, kind: str) -> list:
        return {"heads": self.head_groups, "ffn": self.ffn_groups, "channels": self.channel_groups}[kind]()

    def example_inputs(self, batch: int = 1, seq_len: int | None = None) -> dict:
        raise NotImplementedError

    def max_seq_len(self) -> int | None:
        """The longest text input the model's position embeddings cover (None: not stated)."""
        return None

    def default_seq_len(self) -> int:
        """Text inputs' default length: 128 tokens, or the position limit if that is shorter."""
        limit = self.max_seq_len()
        return min(128, limit) if limit else 128

    def text_len(self, seq_len: int | None) -> int:
        """`seq_len` checked against the position limit, or the default length when None."""
        limit = self.max_seq_len()
        if seq_len is None:
            return self.default_seq_len()
        if limit and seq_len > limit:
            raise SparsaError(f"sequence length {seq_len} is longer than this model's {limit} positions "
                              "(max_position_embeddings)", hint=f"use --seq-len {limit} or less")
        return seq_len

    def describe(self) -> dict:
        heads = self.head_groups()
        ffn = self.ffn_groups()
        chans = self.channel_groups()
        d = {
            "layers": len(heads) or len(ffn),
            "heads_per_layer": [g.num_heads for g in heads],
            "head_dim": [g.head_dim for g in heads],
            "ffn_per_layer": [g.size for g in ffn],
        }
        if chans:
            d["channel_groups"] = {g.name: g.size for g in chans}
        return d


@dataclass
class Family:
    name: str
    adapter: type[FamilyAdapter]
    hf_model_types: tuple[str, ...] = ()
    hf_class_prefixes: tuple[str, ...] = ()
    detect: Callable[[nn.Module], bool] | None = None
    notes: str = ""
    aliases: list[str] = field(default_factory=list)


FAMILIES: dict[str, Family] = {}


def register_family(
    name: str,
    adapter: type[FamilyAdapter],
    *,
    hf_model_types: tuple[str, ...] = (),
    hf_class_prefixes: tuple[str, ...] = (),
    detect: Callable[[nn.Module], bool] | None = None,
    notes: str = "",
) -> Family:
    """Register (or replace) a model family. See the module docstring."""
    adapter.family = name
    fam = Family(name, adapter, tuple(hf_model_types), tuple(hf_class_prefixes), detect, notes)
    FAMILIES[name] = fam
    return fam


REGISTER_HINT = (
    "register one with sparsa.models.register_family(name, AdapterClass, hf_model_types=(...)) "
    "- see docs/models.md"
)


def unknown_family(what: str) -> SparsaError:
    return SparsaError(
        f"unknown model family: {what}; supported families: {', '.join(sorted(FAMILIES))}",
        hint=REGISTER_HINT,
    )


# the family used for any model_type no registered family names (sparsa.models.discovery)
FALLBACK = "discovered"


def family_for_model_type(model_type: str) -> Family:
    """The registered family naming `model_type`; else structural discovery (its adapter raises a
    clear error when it cannot find the model's attention)."""
    for fam in FAMILIES.values():
        if model_type in fam.hf_model_types:
            return fam
    if FALLBACK in FAMILIES:
        return FAMILIES[FALLBACK]
    raise unknown_family(f"Hugging Face model_type {model_type!r}")


def family_for_module(model: nn.Module, config=None) -> Family:
    mt = getattr(config if config is not None else getattr(model, "config", None), "model_type", None)
    if mt:
        return family_for_model_type(mt)
    for fam in FAMILIES.values():
        if fam.detect is not None and fam.detect(model):
            return fam
    raise unknown_family(f"module class {type(model).__name__}")


# ---------------------------------------------------------------- Hugging Face transformers


def _get(model: nn.Module, path: str) -> nn.Module | None:
    try:
        return model.get_submodule(path)
    except AttributeError:
        return None


class HFTransformerAdapter(FamilyAdapter):
    """Finds encoder layers by attribute layout. LAYOUT: paths relative to a layer module."""

    # keys: q, k, v, o, attn (module holding head-count attrs), fc1, fc2; optional per_head
    LAYOUT: dict[str, str] = {}
    PER_HEAD: list[tuple[str, int]] = []
    HEADS_ATTR = "num_attention_heads"  # the attention module's head count
    HEAD_ATTRS: dict[str, str] = {"num_attention_heads": "heads"}

    def _layers(self) -> list[str]:
        q = self.LAYOUT["q"]
        out = []
        for name, mod in self.model.named_modules():
            if all(_get(mod, self.LAYOUT[k]) is not None for k in ("q", "k", "v", "o", "fc1", "fc2")):
                # nn.Linear, or a replacement with the same shape attributes (e.g. sparsa.quant's QuantLinear)
                if isinstance(_get(mod, q), nn.Linear) or hasattr(_get(mod, q), "in_features"):
                    out.append(name)
        return out

    def _p(self, layer: str, key: str) -> str:
        return f"{layer}.{self.LAYOUT[key]}" if layer else self.LAYOUT[key]

    def head_groups(self) -> list[HeadGroup]:
        groups = []
        for layer in self._layers():
            attn_path = self._p(layer, "attn")
            attn = self.model.get_submodule(attn_path)
            heads = int(getattr(attn, self.HEADS_ATTR))
            head_dim = int(getattr(attn, "attention_head_size", None) or getattr(attn, "head_dim"))
            per_head = [(f"{self._p(layer, 'attn')}.{p}", ax) for p, ax in self.PER_HEAD]
            groups.append(
                HeadGroup(
                    name=attn_path, q=self._p(layer, "q"), k=self._p(layer, "k"), v=self._p(layer, "v"),
                    o=self._p(layer, "o"), num_heads=heads, head_dim=head_dim, attrs=dict(self.HEAD_ATTRS),
                    per_head=per_head,
                )
            )
        return groups

    def ffn_groups(self) -> list[FFNGroup]:
        return [
            FFNGroup(name=layer, fc1=self._p(layer, "fc1"), fc2=self._p(layer, "fc2"),
                     size=self.model.get_submodule(self._p(layer, "fc1")).out_features)
            for layer in self._layers()
        ]


class BertAdapter(HFTransformerAdapter):
    modality = "text"
    LAYOUT = {
        "attn": "attention.self", "q": "attention.self.query", "k": "attention.self.key",
        "v": "attention.self.value", "o": "attention.output.dense",
        "fc1": "intermediate.dense", "fc2": "output.dense",
    }
    HEAD_ATTRS = {"num_attention_heads": "heads", "all_head_size": "all_head_size"}

    # position ids start after the padding index in these (RoBERTa's embeddings)
    _PADDED_POSITIONS = ("roberta", "xlm-roberta", "camembert", "data2vec-text")

    def max_seq_len(self) -> int | None:
        n = getattr(self.config, "max_position_embeddings", None)
        if n is not None and getattr(self.config, "model_type", None) in self._PADDED_POSITIONS:
            n -= (self.config.pad_token_id or 0) + 1
        return n

    def example_inputs(self, batch: int = 1, seq_len: int | None = None) -> dict:
        cfg = self.config
        seq_len = self.text_len(seq_len)
        g = torch.Generator().manual_seed(0)
        lo = 1000 if cfg.vocab_size > 1000 else 5  # BERT's first 1000 ids are special/unused; tiny vocabularies: past the specials
        ids = torch.randint(lo, cfg.vocab_size, (batch, seq_len), generator=g)
        ids[:, 0] = 101 if cfg.vocab_size > 102 else 0  # [CLS]
        ids[:, -1] = 102 if cfg.vocab_size > 102 else 0  # [SEP]
        return {
            "input_ids": ids,
            "attention_mask": torch.ones(batch, seq_len, dtype=torch.long),
            "token_type_ids": torch.zeros(batch, seq_len, dtype=torch.long),
        }


class DistilBertAdapter(BertAdapter):
    LAYOUT = {
        "attn": "attention", "q": "attention.q_lin", "k": "attention.k_lin", "v": "attention.v_lin",
        "o": "attention.out_lin", "fc1": "ffn.lin1", "fc2": "ffn.lin2",
    }
    HEADS_ATTR = "n_heads"
    HEAD_ATTRS = {"n_heads": "heads"}  # its forward reshapes with -1 heads; `dim` is the model width, kept

    def example_inputs(self, batch: int = 1, seq_len: int | None = None) -> dict:
        inputs = super().example_inputs(batch, seq_len)
        del inputs["token_type_ids"]  # DistilBERT has no segment embeddings
        return inputs


def _image_size(cfg) -> tuple[int, int]:
    s = cfg.image_size
    return (s, s) if isinstance(s, int) else tuple(s)


class ViTAdapter(HFTransformerAdapter):
    modality = "image"
    LAYOUT = {
        "attn": "attention", "q": "attention.q_proj", "k": "attention.k_proj", "v": "attention.v_proj",
        "o": "attention.o_proj", "fc1": "mlp.fc1", "fc2": "mlp.fc2",
    }

    def example_inputs(self, batch: int = 1, seq_len: int | None = None) -> dict:
        g = torch.Generator().manual_seed(0)
        h, w = _image_size(self.config)
        return {"pixel_values": torch.randn(batch, self.config.num_channels, h, w, generator=g)}


class SwinAdapter(ViTAdapter):
    PER_HEAD = [("relative_position_bias.relative_position_bias_table", 1)]


class VideoMAEAdapter(BertAdapter):
    modality = "video"
    LAYOUT = {
        "attn": "attention.attention", "q": "attention.attention.query", "k": "attention.attention.key",
        "v": "attention.attention.value", "o": "attention.output.dense",
        "fc1": "intermediate.dense", "fc2": "output.dense",
    }

    def example_inputs(self, batch: int = 1, seq_len: int | None = None) -> dict:
        c = self.config
        g = torch.Generator().manual_seed(0)
        h, w = _image_size(c)
        return {"pixel_values": torch.randn(batch, c.num_frames, c.num_channels, h, w, generator=g)}


# families share an adapter where transformers lays the layers out the same way. Why these five stay named
# (every other encoder is found by sparsa.models.discovery): discovery cannot decide the inputs their forward
# takes (BERT's [CLS]/[SEP] ids, DistilBERT without segment ids) or RoBERTa's padded position ids; their
# layout tables are pinned equal to what discovery finds (tests/test_models_named_vs_discovered.py).
register_family("bert", BertAdapter,
                hf_model_types=("bert", "roberta", "xlm-roberta", "camembert", "electra", "data2vec-text"),
                hf_class_prefixes=("Bert", "Roberta", "XLMRoberta", "Camembert", "Electra", "Data2VecText"),
                notes="BERT-layout encoders (BERT, RoBERTa, XLM-R, CamemBERT, ELECTRA, Data2Vec-text), "
                      "e.g. the real all-MiniLM-L6-v2 (`minilm`)")
register_family("distilbert", DistilBertAdapter, hf_model_types=("distilbert",), hf_class_prefixes=("DistilBert",))
register_family("vit", ViTAdapter, hf_model_types=("vit", "deit"), hf_class_prefixes=("ViT", "DeiT"),
                notes="ViT and DeiT")
register_family("swin", SwinAdapter, hf_model_types=("swin",), hf_class_prefixes=("Swin",))
register_family("videomae", VideoMAEAdapter, hf_model_types=("videomae",), hf_class_prefixes=("VideoMAE",))
