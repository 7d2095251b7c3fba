"""What flows between pipeline stages: the model being compressed, its dense reference, data, artefacts."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sparsa.errors import SparsaError
from sparsa.recipe import LoadedRecipe


@dataclass
class PipelineState:
    recipe: LoadedRecipe
    loaded: Any = None  # sparsa.models.LoadedModel being compressed
    reference: Any = None  # the dense original (fidelity reference, dense baseline for the simulator)
    out_dir: Path | None = None
    threads: int = 2
    quiet: bool = False
    note: Any = None  # note(message): a progress line under the running step (None: say nothing)
    # artefacts stages leave for later steps (plain data or paths)
    attention: dict | None = None  # {"method":..., "options":...} installed on `loaded.model`
    onnx_path: Path | None = None  # integer ONNX model for ORT, when a stage exported one
    quant: dict | None = None  # what the quantize stage did (bits, scheme, size accounting)
    size_bytes: int | None = None  # real storage size when a stage knows it better than fp32 bytes
    scratch: Path | None = None  # where artefacts go when there is no out_dir (removed after the run)
    _data: dict = field(default_factory=dict)
    _eval_samples: int | None = None
    _dense_macs: int | None = None

    def workdir(self) -> Path:
        """The run's folder for artefacts (ONNX files, checkpoints): out_dir, else the scratch folder."""
        d = self.out_dir or self.scratch
        if d is None:
            raise SparsaError("internal: the pipeline state has neither an output nor a scratch folder")
        return Path(d)

    # ------------------------------------------------------------ data

    def dataset(self, name: str | None, split: str, limit: int | None = None):
        """Load (once) a data set by built-in name or path (`limit`: at most that many samples)."""
        if name is None:
            return None
        key = (name, split, limit)
        if key not in self._data:
            from sparsa.data import load_dataset
            spec = self.recipe.data
            ds = load_dataset(self.recipe.resolve_path(name), split=split, seed=spec.seed, model=self.loaded,
                              image_size=spec.image_size, frames=spec.frames, limit=limit)
            modality = getattr(self.loaded, "modality", None) if self.loaded is not None else None
            if modality is not None and (ds.kind == "text") != (modality == "text"):
                raise SparsaError(f"data {name!r} ({split} split) is {ds.kind}, but the model takes {modality} inputs",
                                  hint="name data of the model's kind in the recipe's data: section "
                                       "(train / calib / eval) or in the stage's data / calib field")
            self._data[key] = ds
        return self._data[key]

    def calib_data(self, override: str | None = None):
        name = override or self.recipe.data.calib or self.default_data()
        return self.dataset(name, "calib")

    def train_data(self, override: str | None = None):
        name = override or self.recipe.data.train or self.default_data()
        return self.dataset(name, "train")

    def eval_data(self):
        name = self.recipe.data.eval or self.default_data(eval=True)
        return self.dataset(name, "test", limit=self.eval_samples())

    def eval_samples(self) -> int | None:
        """Test samples every quality measurement uses: the recipe's `evaluation.max_samples`, else for
        classifiers a count scaled by the dense model's MACs (`sparsa.metrics.budget`; at the emulation's
        cost when the recipe has an attention stage); the same count for every stage, so they compare."""
        if self._eval_samples is None:
            n = self.recipe.evaluation.max_samples
            model = self.reference or self.loaded
            if n is None and getattr(model, "modality", "text") != "text":
                from sparsa.metrics import budget

                emulated = any(st.type == "attention" for st in self.recipe.stages)
                n = budget.eval_samples(self.dense_macs(), factor=budget.EMULATION_FACTOR if emulated else 1)
            self._eval_samples = n
        return self._eval_samples

    def dense_macs(self) -> int:
        """MACs per sample of the dense model (once: it sizes evaluation sets and batches)."""
        if self._dense_macs is None:
            from sparsa.metrics import budget

            self._dense_macs = budget.macs_per_sample(self.reference or self.loaded)
        return self._dense_macs

    def default_data(self, eval: bool = False) -> str | None:
        """Data that fits the model when the recipe names none."""
        modality = getattr(self.loaded, "modality", None) if self.loaded is not None else None
        if modality == "text":
            return "sentences" if eval else "corpus"
        if modality == "video":
            return "clips"
        if modality == "image":
            return "digits"
        return None
