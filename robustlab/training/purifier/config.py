"""The purifier trainer's configuration (SSR report, Algorithm 2; NRP baseline): one frozen
dataclass, checked on construction, saved as the run's ``config.json``."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union

from ..._checks import check_eps, check_int, check_positive, is_size
from ...data.options import DataOptions
from ...errors import ConfigError
from ..checks import data_options

NRP_PRESET = "NRP"  # the loss preset ``arch="nrp"`` defaults to


@dataclass(frozen=True)
class PurifierConfig:
    """Everything that decides the weights a purifier run ends with.

    Defaults are the SSR report's (REFERENCE.md, seed 000): generator B + critic B with the B3
    loss (cGAN + 100 perceptual + 10 L2), adversaries from the feature-distortion attack on a
    trained VGG19's first 2 blocks at eps 16/255 (its default step eps/8, 20 steps, random
    start), regenerated for every mini-batch; Adam lr 1e-4, betas (0.9, 0.999) for both networks,
    batch 16, 30% of the training split, horizontal flips where the dataset allows them, 200
    epochs.

    Attributes:
        dataset: dataset name; image_size: side of the (square) images.
        extractor: classifier checkpoint whose first ``extractor_blocks`` blocks are the fixed
            feature extractor P_n of the attack (and of the perceptual loss unless
            ``perceptual_extractor``/``perceptual_blocks`` say otherwise).
        preset: a LOSS_PRESETS name; None: "NRP" when ``arch == "nrp"``, else "B3".
        arch, critic: PURIFIERS / CRITICS names; None: the preset's.
        weights: explicit loss weights {cgan, l1, l2, perceptual} replacing the preset's.
        width: channel multiplier of generator and critic; arch_kwargs / critic_kwargs: their
            architecture options (e.g. ``{"n_blocks": 4}`` for "nrp").
        eps, steps, step_size (None: the attack's default, eps/8), random_start: the
            feature-distortion attack.
        classifier: checkpoint scored every epoch (None: the extractor's classifier).
        val_n: test-split images (a seeded sample) for the per-epoch robust accuracy (0: none).
        grid_n: images in each epoch's perturbed / purified / clean grid.
        amp: autocast of every pass ("bf16", or "fp16" on a CUDA GPU with gradient scaling);
            channels_last, compile: the one-GPU speed options (the same losses, faster).
        augment: None: horizontal flips where the dataset allows them (else none); "flip",
            "none" or any AUGMENTATIONS preset name.
    """

    dataset: str
    extractor: str
    extractor_blocks: int = 2
    preset: Optional[str] = None
    arch: Optional[str] = None
    critic: Optional[str] = None
    weights: Optional[dict[str, float]] = None
    width: float = 1.0
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    critic_kwargs: dict[str, Any] = field(default_factory=dict)
    perceptual_extractor: Optional[str] = None
    perceptual_blocks: Optional[int] = None
    eps: float = 16 / 255
    steps: int = 20
    step_size: Optional[float] = None
    random_start: bool = True
    epochs: int = 200
    batch_size: int = 16
    lr: float = 1e-4
    betas: tuple[float, ...] = (0.9, 0.999)
    subset: Optional[Union[int, float]] = 0.3
    image_size: int = 32
    augment: Optional[str] = None
    classifier: Optional[str] = None
    val_n: int = 500
    grid_n: int = 8
    seed: int = 0
    amp: Literal["none", "bf16", "fp16"] = "none"  # fp16: CUDA only, with a gradient scaler
    channels_last: bool = False  # G, D, the frozen networks and every batch in channels_last
    compile: bool = False        # torch.compile G, D and the frozen extractor(s)
    gan_mode: Literal["minimax", "non-saturating"] = "minimax"  # generator term: log(1 - D) or -log D
    data: DataOptions = field(default_factory=DataOptions)  # channels, split (side: image_size)

    def __post_init__(self) -> None:
        for name in ("extractor_blocks", "steps", "epochs", "batch_size", "grid_n"):
            check_int(name, getattr(self, name))
        check_int("image_size", self.image_size, 2)
        check_int("val_n", self.val_n, 0)
        if self.perceptual_blocks is not None:
            check_int("perceptual_blocks", self.perceptual_blocks)
        check_positive("lr", self.lr)
        check_positive("width", self.width)
        check_eps(self.eps)
        if self.step_size is not None:
            check_positive("step_size", self.step_size)
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"betas must be two numbers in [0, 1), got {list(self.betas)}")
        if self.subset is not None and not is_size(self.subset):
            raise ConfigError(f"subset must be a count >= 1 or a fraction in (0, 1], got {self.subset!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be an integer >= 0, got {self.seed!r}")
        for name in ("channels_last", "compile"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        object.__setattr__(self, "data", data_options(self.data))
        if self.data.size is not None:
            raise ConfigError(f"data.size cannot be set for a purifier run: its image side is "
                              f"image_size (--image-size), here {self.image_size}")
        if not isinstance(self.extractor, str) or not self.extractor:
            raise ConfigError("extractor must name a classifier checkpoint (--extractor CKPT)")
        self.loss_weights()  # unknown preset/arch/critic names and bad weights fail here
        self.generator_name()
        self.critic_name()

    # ------------------------------------------------------------------ resolved settings
    def preset_name(self) -> str:
        """The loss preset in force (the explicit one, else "NRP" for arch nrp, else "B3")."""
        from ...purifiers import DEFAULT_LOSS_PRESET

        if self.preset is not None:
            return self.preset
        return NRP_PRESET if self.arch == "nrp" else DEFAULT_LOSS_PRESET

    def _preset(self):
        from ...purifiers import LOSS_PRESETS

        return LOSS_PRESETS.get(self.preset_name())  # UnknownNameError lists the presets

    def generator_name(self) -> str:
        from ...purifiers import PURIFIERS

        name = self.arch or self._preset().generator
        PURIFIERS.get(name)
        return name

    def critic_name(self) -> str:
        from ...purifiers import CRITICS

        name = self.critic or self._preset().critic
        CRITICS.get(name)
        return name

    def loss_weights(self):
        """The :class:`LossWeights` in force: ``weights`` if given, else the preset's."""
        from ...purifiers import LossWeights

        if self.weights is None:
            return self._preset().weights
        known = [f.name for f in dataclasses.fields(LossWeights)]
        unknown = sorted(set(self.weights) - set(known))
        if unknown:
            raise ConfigError(f"unknown loss weight(s) {', '.join(unknown)}; known: {', '.join(known)}")
        return LossWeights(**{k: self.weights.get(k, 0.0) for k in known})

    def attack_step(self) -> float:
        """The feature-distortion step: ``step_size``, else the attack's default
        (``attacks.DEFAULT_STEP``: eps/8, REFERENCE.md)."""
        from ...defaults import default_step

        return self.step_size if self.step_size is not None else default_step(
            "feature-distortion", self.eps)

    def replace(self, **changes: Any) -> "PurifierConfig":
        return dataclasses.replace(self, **changes)
