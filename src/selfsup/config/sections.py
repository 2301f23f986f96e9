"""The sections of a run's config that every layer reads: data, backbone, optimizer, training; the base
models and the error type of the config; durations (``train.budget``)."""
from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

class ConfigError(ValueError):
    """A config problem, with a message that names the key and says how to fix it."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SettingsModel(_Section):
    """Base of the settings models that other layers define and the config validates as a section (an evaluation
    protocol's ``eval.<name>``): a misspelt key fails with its dotted path."""


class ProgressiveResize(_Section):
    """Low resolution early (progressive resizing: Howard's fast.ai DAWNBench ImageNet runs; FFCV's ResNet
    recipes): the training views start at ``start_size`` and grow linearly to ``data.image_size`` between the
    progress fractions ``ramp`` (of the steps or of the budget), rounded to a multiple of ``multiple`` pixels;
    crops of a size of their own (multi-crop's small ones) shrink in proportion. A convolutional step costs in
    proportion to its pixels, so the early low-resolution steps are several times cheaper."""
    start_size: int = Field(16, ge=8)
    ramp: tuple[float, float] = (0.3, 0.7)
    multiple: int = Field(8, ge=1)

    @field_validator("ramp")
    @classmethod
    def _ramp_ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0.0 <= value[0] <= value[1] <= 1.0:
            raise ValueError(f"must be two progress fractions start <= end within 0..1 (e.g. [0.3, 0.7]), not "
                             f"{list(value)}")
        return value


class DataConfig(_Section):
    source: str = "digits"  # an embedded dataset name, an image folder or a .npz file
    image_size: int = Field(32, ge=8)
    # Input channels. None: as the data has them (3 for 8-bit pictures, the band count of raw domain data).
    channels: int | None = Field(None, ge=1)
    # How image files are read: "8bit" (decoded to 8-bit gray / RGB), "raw" (bands, dtype and range kept:
    # TIFF / GeoTIFF, 16-bit PNG, .npy / .npz, NIfTI, DICOM; selfsup.data.readers), "auto" (raw when the files
    # need it: more bands, more bits, or a raw-only format).
    pixels: Literal["auto", "8bit", "raw"] = "auto"
    # Raw data: the statistics file (`selfsup data stats DIR`); None: DIR/.selfsup-stats.json when it exists,
    # else computed at start. They fix the pixel window (clip_percentiles of each band -> [0, 1]) and the
    # normalisation (the windowed data's mean / std). clip_percentiles null: each band's min..max.
    stats: str | None = None
    clip_percentiles: tuple[float, float] | None = (1.0, 99.0)
    # Which photometric augmentations apply (selfsup.data.pixels): "rgb", "gray" (8-bit pictures), "bands"
    # (measurements: per-band jitter, band dropout, spectral tilt, noise); "auto": from the data.
    channel_kind: Literal["auto", "rgb", "gray", "bands"] = "auto"
    # Overhead imagery (satellite, aerial, microscopy, slides): vertical flips and 90-degree rotations in every
    # view, besides the horizontal flips of data.hflip.
    overhead: bool = False
    # Volumes (the volumes dataset): train on their 2-D depth slices instead (every slice an image with its
    # volume's label, the held-out split still by volume), so every 2-D method and backbone applies.
    slices: bool = False

    @field_validator("clip_percentiles")
    @classmethod
    def _percentiles_ordered(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not 0.0 <= value[0] < value[1] <= 100.0:
            raise ValueError(f"must be two percentiles low < high within 0..100 (e.g. [1, 99]), not {list(value)}")
        return value
    # Tables (.csv / .parquet without an image column, selfsup.data.tables): the column holding the labels; None:
    # a column named label, target or class, else unlabelled.
    label_column: str | None = None
    max_bad_fraction: float = Field(0.1, ge=0.0, le=1.0)
    holdout_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    num_workers: int = Field(2, ge=0)
    # Horizontal flips in every view. None: the data's own default (False for the embedded digits, whose mirror
    # images are other glyphs; True for folders and arrays). Set False for text, digits, or oriented medical images.
    hflip: bool | None = None
    # Streamed shards (data.source=<shards>/index.json or a URL; selfsup.data.stream_order): the shuffle buffer
    # within a shard (samples), and the streams each process reads (None: data.num_workers, at least 1; part of
    # the data order, so a resumed run keeps its own).
    shuffle_buffer: int = Field(1000, ge=1)
    streams: int | None = Field(None, ge=1)
    # Where views are cropped, resized and coloured: "workers" (per sample, in the DataLoader workers), "device"
    # (batched on the training device, selfsup.views.device; needs one image size: arrays, embedded sets,
    # data.cache), "auto" (the faster of the two, measured at start). The same views either way.
    augment: Literal["workers", "device", "auto"] = "workers"
    cache: bool = False  # image folders: decode once into <runs_dir>/.cache, reused by later runs (selfsup.data.cache)
    cache_size: int | None = Field(None, ge=8)  # side of the cached squares; None: round(1.25 * image_size)
    # Smaller training views early in the run (ProgressiveResize; made on the device: data.augment=device or
    # auto). None: every step at data.image_size.
    progressive_resize: ProgressiveResize | None = None
    mean: list[float] | None = None  # per-channel normalisation; None = measured from the data
    std: list[float] | None = None

    @model_validator(mode="after")
    def _resize_starts_smaller(self) -> DataConfig:
        resize = self.progressive_resize
        if resize is not None and resize.start_size > self.image_size:
            raise ValueError(f"data.progressive_resize.start_size={resize.start_size} is larger than "
                             f"data.image_size={self.image_size}: the views grow from start_size to image_size; set "
                             "a start_size below it")
        if self.augment == "workers" and resize is not None:
            raise ValueError("data.progressive_resize needs the views made on the training device, a batch at one "
                             "size: set data.augment=device (or auto; data.cache=true for an image folder)")
        return self


class BackboneConfig(_Section):
    name: str = "small_resnet"
    options: dict[str, Any] = Field(default_factory=dict)  # passed to the backbone's constructor
    # Start from these weights (a .safetensors / .pt state dict, a saved backbone or a run folder) instead of a
    # random init; heads start fresh. A first layer of another band count (RGB weights, 13-band data) is
    # carried to the data's bands by `carry` (selfsup.backbones.channels): "repeat" (repeat-and-scale, exact on
    # gray images) or "rgb_bands" (the RGB kernels on the bands listed in rgb_bands, e.g. [3, 2, 1] for B4, B3,
    # B2 of Sentinel-2).
    weights: str | None = None
    carry: Literal["repeat", "rgb_bands"] = "repeat"
    rgb_bands: list[int] | None = None


class OptimConfig(_Section):
    name: Literal["adamw", "sgd", "lars"] = "adamw"
    lr: float = Field(1e-3, gt=0)  # for batch_size 256; scaled linearly with the global batch when scale_lr
    scale_lr: bool = True
    weight_decay: float = Field(1e-4, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    betas: tuple[float, float] = (0.9, 0.999)
    warmup: float = Field(0.05, ge=0, lt=1)  # fraction of training spent in linear warm-up
    final_lr_fraction: float = Field(0.0, ge=0, le=1)  # the schedule ends at lr * final_lr_fraction
    # "cosine" (warm-up, cosine decay); "wsd" (warm-up, constant, the last `decay` of training decays along
    # `decay_shape`); "infinite" (wsd with a cosine cool-down to lr * constant_lr_fraction over `cooldown` after
    # the warm-up). wsd and infinite runs can be extended: `selfsup train --resume RUN train.budget=+10m`.
    schedule: Literal["cosine", "wsd", "infinite"] = "cosine"
    decay: float = Field(0.2, gt=0, le=1)
    decay_shape: Literal["1-sqrt", "linear", "cosine"] = "1-sqrt"
    cooldown: float = Field(0.1, ge=0, lt=1)
    constant_lr_fraction: float = Field(0.5, gt=0, le=1)
    # Layer-wise learning-rate decay (BEiT, Bao et al. 2022): backbone layer l of L learns at
    # lr * layer_decay ** (L + 1 - l); heads at lr. 1 = off. For continued pre-training from weights, e.g. 0.8.
    layer_decay: float = Field(1.0, gt=0, le=1)
    # The first fraction of training updates only the heads (backbone lr 0), then the backbone's lr warms up
    # over optim.warmup: fresh heads do not wreck pretrained features. None: 0.05 with backbone.weights, else 0.
    freeze_backbone: float | None = Field(None, ge=0, lt=1)

    @model_validator(mode="after")
    def _phases_fit(self) -> OptimConfig:
        if self.schedule != "cosine":
            cooldown = self.cooldown if self.schedule == "infinite" else 0.0
            if self.warmup + cooldown + self.decay > 1:
                raise ValueError(f"optim.warmup ({self.warmup}) + {'optim.cooldown (%s) + ' % cooldown if cooldown else ''}"
                                 f"optim.decay ({self.decay}) exceed the whole run: lower optim.decay (e.g. 0.2)")
        return self
    grad_clip: float | None = Field(None, gt=0)
    exclude_bias_and_norm: bool = True  # no weight decay (and no LARS adaptation) on biases and norm params
    fused: bool | None = None  # AdamW/SGD kernel: True fused, False foreach; None: fused on CUDA, foreach on CPU


class TrainConfig(_Section):
    batch_size: int = Field(256, ge=2)  # per optimizer step, over all ranks and accumulation steps
    accumulate: int = Field(1, ge=1)
    epochs: float | None = Field(None, gt=0)
    budget: str | None = None  # wall-clock budget, e.g. "90s", "10m", "2h"; the schedule follows elapsed time
    max_steps: int | None = Field(None, ge=1)  # hard stop (tests, debugging); also the schedule length if alone
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    channels_last: bool = True
    compile: bool = False  # torch.compile the backbone; falls back to eager, with a warning, where it fails
    sync_batchnorm: bool | None = None  # under DDP; None: as the method asks (BYOL, SimSiam, SwAV, DINO do)
    # Under several processes: "ddp" keeps a full copy of the method on every rank; "fsdp" shards parameters,
    # gradients and optimizer state over the ranks (PyTorch's FSDP2, fully_shard), each transformer block its
    # own unit, for ViTs too large for full copies. One process: ignored.
    parallel: Literal["ddp", "fsdp"] = "ddp"
    deterministic: bool = False
    log_every: int = Field(10, ge=1)
    checkpoint_every: int = Field(200, ge=1)  # steps; a checkpoint is also written at the end and on SIGTERM
    monitor_every: int = Field(50, ge=1)  # collapse monitor period (steps)
    progress: bool = True
    # Intra-op threads of the training step (selfsup.engine.threads): "auto" times all threads against all
    # less one per DataLoader worker over the first steps on a CPU (again every 500) and trains with the
    # faster; N sets it.
    # Evaluation after training uses every thread.
    threads: int | Literal["auto"] = "auto"

    @field_validator("threads")
    @classmethod
    def _threads_positive(cls, value: int | str) -> int | str:
        if value != "auto" and value < 1:
            raise ValueError(f"must be a positive number of threads or auto, not {value}")
        return value

    @model_validator(mode="after")
    def _sharding_is_eager(self) -> TrainConfig:
        if self.parallel == "fsdp" and self.compile:
            raise ValueError("train.compile=true with train.parallel=fsdp: sharded training runs eager here; set "
                             "train.compile=false (or train.parallel=ddp to compile)")
        return self

    @field_validator("budget")
    @classmethod
    def _budget_parses(cls, value: str | None) -> str | None:
        if value is not None and str(value).strip().startswith("+"):
            raise ValueError(f"'{value}' extends a finished run: give it when resuming, `selfsup train --resume RUN "
                             f"train.budget={value}`")
        if value is not None:
            parse_duration(value)
        return value


def parse_duration(text: str) -> float:
    """'90s', '10m', '1.5h', '1h30m' or a bare number of seconds -> seconds."""
    text = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([smhd])", text)
    if not parts or "".join(n + u for n, u in parts) != text.replace(" ", ""):
        raise ValueError(f"cannot read duration '{text}': use e.g. '90s', '10m', '1.5h' or '1h30m'")
    scale = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    return sum(float(n) * scale[u] for n, u in parts)
