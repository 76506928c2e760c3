"""The ``DADA`` transform: applies a DADA policy to PIL images, image tensors, videos and whole
torchvision v2 samples (images with their boxes, masks and keypoints)."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2

from . import params as random_params
from .batch import apply_operations, compiled_apply_operations
from .batch_pil import pil_image_of, planes_of, prefers_pil
from .fill import CUTOUT_FILL, Fill, fill_for_channels, fill_levels, normalize_fill
from .functional_pil import PilOptions
from .functional_tensor import TensorOptions
from .geometry import drawn_affine_matrices
from .ops import OperationSpec
from .policy import Policy
from .presets import load_policy
from .targets import TARGET_TYPES, move_target
from .warp_cache import WarpCache

_RESAMPLING = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}
_COLOUR_MODES = {"L": 1, "RGB": 3}
_ALPHA_MODES = {"LA": "L", "RGBA": "RGB"}
_WIDE_MODES = ("I", "F")  # modes (and their I;16... variants) whose levels do not fit 8 bits
Operations = list[tuple[OperationSpec, float, tuple[float, float]]]


def _interpolation_name(interpolation: Any) -> str:
    """Accept a name, torchvision's InterpolationMode or PIL's Resampling. ``NEAREST_EXACT`` is
    ``"nearest"``, as torchvision maps it to PIL's NEAREST: PIL samples each output pixel's centre,
    which is what "exact" nearest means (the tensor kernels reproduce PIL's nearest)."""
    value = getattr(interpolation, "value", interpolation)
    if isinstance(value, str) and value.lower() == "nearest-exact":
        value = "nearest"
    if isinstance(value, int):
        value = {int(mode): name for name, mode in _RESAMPLING.items()}.get(value, value)
    if isinstance(value, str) and value.lower() in _RESAMPLING:
        return value.lower()
    raise ValueError(f"interpolation must be one of {', '.join(_RESAMPLING)}, got {interpolation!r}")


def _as_policy(policy: str | os.PathLike[str] | Policy | Sequence) -> Policy:
    if isinstance(policy, Policy):
        return policy
    if isinstance(policy, (str, os.PathLike)):
        return load_policy(policy)
    return Policy.from_list(policy)


FillTable = dict[Any, Fill | None]


def _fill_table(fill: Any) -> tuple[FillTable, float]:
    """The fills of images by input type (``"others"``: every other type) and the fill of masks, from
    ``fill`` as torchvision's: one value, RGB or None (images; masks get 0 then), or a dict keyed by
    input types (``PIL.Image.Image``, ``torch.Tensor``, ``tv_tensors.Image``, ``tv_tensors.Video``,
    ``tv_tensors.Mask``...) and ``"others"``."""
    if not isinstance(fill, Mapping):
        return {"others": normalize_fill(fill)}, 0
    for key in fill:
        if not isinstance(key, type) and key != "others":
            raise ValueError(
                f"fill keys must be input types (e.g. tv_tensors.Image, PIL.Image.Image) or 'others', got {key!r}"
            )
    table = {key: normalize_fill(value) for key, value in fill.items() if key is not tv_tensors.Mask}
    mask = fill.get(tv_tensors.Mask, fill.get("others"))
    if mask is not None and (isinstance(mask, bool) or not isinstance(mask, (int, float)) or math.isnan(mask)):
        raise ValueError(f"fill: the fill of masks must be one number (a label), got {mask!r}")
    return table, 0 if mask is None else mask


class _PendingGenerator(NamedTuple):
    """An accelerator generator not created yet: in a DataLoader worker, creating it would initialise
    the accelerator there (with ``fork``, CUDA cannot be), so it is created when a draw needs it."""

    device: str
    seed: int  # the generator's initial seed
    state: bytes | None  # the state to restore, or None: seeded with ``seed``

    def initial_seed(self) -> int:
        return self.seed

    def create(self) -> torch.Generator:
        generator = torch.Generator(self.device)
        if self.state is None:
            return generator.manual_seed(self.seed)
        generator.set_state(torch.frombuffer(bytearray(self.state), dtype=torch.uint8))
        return generator


def _worker_seed(seed: int, worker_seed: int) -> int:
    """A seed for one DataLoader worker and epoch, derived from the generator's seed and the worker's."""
    digest = hashlib.blake2b(f"{seed}/{worker_seed}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class DADA(v2.Transform):
    """Apply a DADA policy: per image, one sub-policy chosen uniformly (or by the policy's sampling weights),
    each operation with its probability.

    Args:
        policy: a preset name (``"cifar10"``, ``"cifar100"``, ``"svhn"``, ``"imagenet"``
            or a user preset), a policy JSON file, ``"hf-hub:org/name[@revision]"``,
            a :class:`Policy`, or literal sub-policies of ``(op, probability, magnitude)``.
        interpolation: resampling of the geometric operations: ``"nearest"`` (the
            paper's), ``"bilinear"`` or ``"bicubic"``; torchvision's InterpolationMode
            and PIL's Resampling are accepted too.
        fill: colour of areas uncovered by geometric operations, one value or RGB, as
            torchvision's: in the images' own range (0..255 on PIL and uint8 images, 0..1 on
            float images: 1.0 is white); None (default) is black. Masks get 0 there unless
            ``fill`` is a dict by input type as torchvision's, e.g. ``{tv_tensors.Image: 128,
            tv_tensors.Mask: 255}`` (keys: types such as ``PIL.Image.Image``, ``torch.Tensor``,
            ``tv_tensors.Image``, ``tv_tensors.Video``, ``tv_tensors.Mask``, and ``"others"``).
        cutout_fill: colour of the Cutout square, in the images' range as ``fill``; None
            (default) is the authors' (125, 123, 114) levels (their 0..255 colour on every type).
        magnitude_std: standard deviation of Gaussian noise added to each magnitude
            (on the [0, 1] scale) at every application; 0 (default) is the paper's.
        generator: an optional ``torch.Generator``; by default torch's global RNG.
            In a DataLoader worker it is reseeded once per worker and epoch from its
            seed and the worker's seed, so workers and epochs draw different streams.
        compile: apply tensor batches with ``torch.compile(fullgraph=True)`` (same bytes as eager;
            the first call per batch shape compiles, about a minute on a CPU; see the README).

    Inputs: a PIL image (mode L, RGB, RGBA, LA or P; returned in the same mode and
    size), or a tensor ``[..., C, H, W]`` with C in {1, 3}, uint8 or float in [0, 1],
    on any device. On a batch every image draws its own sub-policy, operations and signs.
    A ``tv_tensors.Video`` ``[..., T, C, H, W]`` draws once per clip, for all its frames.
    As a torchvision v2 transform it takes whole samples (tuples, dicts, lists): one draw
    per sample moves its ``BoundingBoxes``, ``Mask`` and ``KeyPoints`` with the image;
    everything else passes through.
    """

    def __init__(
        self,
        policy: str | os.PathLike[str] | Policy | Sequence = "imagenet",
        *,
        interpolation: Any = "nearest",
        fill: float | Sequence[float] | Mapping[type | str, Any] | None = None,
        cutout_fill: float | Sequence[float] | None = None,
        magnitude_std: float = 0.0,
        generator: torch.Generator | None = None,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.policy = _as_policy(policy)
        self._slots = max(len(sub_policy) for sub_policy in self.policy)
        self.interpolation = _interpolation_name(interpolation)
        self.fill, self.cutout_fill = fill, cutout_fill  # as given, as torchvision keeps them
        self._fills, self.mask_fill = _fill_table(fill)
        self._cutout_fill = normalize_fill(cutout_fill, "cutout_fill")
        if not isinstance(magnitude_std, (int, float)) or not 0 <= magnitude_std:
            raise ValueError(f"magnitude_std must be a number >= 0, got {magnitude_std!r}")
        self.magnitude_std = float(magnitude_std)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator or None, got {generator!r}")
        self._generator: torch.Generator | _PendingGenerator | None = generator
        if not isinstance(compile, bool):
            raise ValueError(f"compile must be True or False, got {compile!r}")
        self._compile = compile
        self._tables: dict[str, random_params.PolicyTable] = {}
        self._range_checked: set[str] = set()  # accelerators whose first float batch was checked
        self._warp_cache = WarpCache()  # the warps of the policy's few arguments (no magnitude noise)
        self._worker_seed: int | None = None  # the DataLoader worker seed the generator was derived for

    # -- randomness -------------------------------------------------------------

    @property
    def generator(self) -> torch.Generator | None:
        """The ``torch.Generator`` the draws read (None: torch's global RNG)."""
        if isinstance(self._generator, _PendingGenerator):
            self._generator = self._generator.create()
        return self._generator

    @generator.setter
    def generator(self, generator: torch.Generator | None) -> None:
        self._generator = generator

    def _generator_device(self) -> torch.device | None:
        """The generator's device, without creating a pending generator."""
        return None if self._generator is None else torch.device(self._generator.device)

    def _table(self, device: torch.device) -> random_params.PolicyTable:
        key = str(device)
        if key not in self._tables:
            self._tables[key] = random_params.PolicyTable.from_policy(self.policy, device)
        return self._tables[key]

    def draw_params(self, count: int, device: torch.device | str = "cpu") -> random_params.DrawnParams:
        """Draw the random parameters for ``count`` images, returned on ``device``."""
        generator_device = self._generator_device()
        draw_device = torch.device(device) if generator_device is None else generator_device
        if draw_device.type != "cpu" and torch.device(device).type == "cpu" and torch.utils.data.get_worker_info():
            raise ValueError(
                f"DADA's generator is on {draw_device}, but this DataLoader worker augments CPU images: drawing "
                f"would initialise {draw_device.type} in the worker; give DADA a CPU generator (torch.Generator()) "
                "for workers"
            )
        drawn = random_params.draw(self._table(draw_device), count, self.magnitude_std, self.generator)
        return drawn if draw_device == torch.device(device) else drawn.to(torch.device(device))

    def _follow_worker(self) -> None:
        """In a DataLoader worker, give the generator its own stream for this worker and epoch.

        The DataLoader gives each worker of each epoch its own seed (from its base seed); the
        generator is reseeded from that and its own initial seed, once per worker seed. An
        accelerator's generator is only created when a draw needs it (see :class:`_PendingGenerator`).
        """
        if self._generator is None:
            return
        info = torch.utils.data.get_worker_info()
        if info is None or info.seed == self._worker_seed:
            return
        seed = _worker_seed(self._generator.initial_seed(), info.seed)
        device = str(self._generator.device)
        pending = _PendingGenerator(device, seed, None)
        self._generator = pending.create() if torch.device(device).type == "cpu" else pending
        self._worker_seed = info.seed

    def affine_matrices(self, drawn: random_params.DrawnParams, height: int, width: int) -> torch.Tensor:
        """The ``[N, 2, 3]`` float64 matrices mapping a point ``(x, y, 1)`` of each image to where the
        geometric operations of ``drawn`` move it (identity where none applied), on the parameters'
        device and without host synchronisation: for moving targets of a batch augmented with
        :meth:`apply_batch`. Coordinates are continuous pixels, (0, 0) the top-left corner."""
        return drawn_affine_matrices(drawn, height, width)

    # -- application ------------------------------------------------------------

    def forward(self, *inputs: Any) -> Any:
        """Augment one image (a fast path, same result) or a whole sample, as ``v2.Transform`` does."""
        if len(inputs) == 1 and _is_picture(inputs[0]):
            return self.transform(inputs[0], self.make_params(list(inputs)))
        return super().forward(*inputs)

    def check_inputs(self, flat_inputs: list[Any]) -> None:
        if not any(_is_picture(item) for item in flat_inputs):
            found = ", ".join(sorted({type(item).__name__ for item in flat_inputs})) or "nothing"
            raise TypeError(
                f"DADA expects a PIL image or a torch.Tensor, alone or in a sample with its targets; got {found}"
            )

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        """One draw for the sample: ``drawn`` (tensor parameters) for tensors, ``operations`` (applied
        operations, on the host) for PIL images and targets."""
        pictures = [item for item in flat_inputs if _is_picture(item)]
        has_targets = len(pictures) < len(flat_inputs)
        counts = {self._check_picture(picture) for picture in pictures}
        if len(counts) > 1:
            raise ValueError(
                f"the images of one sample are augmented together and must hold as many images each, got {sorted(counts)}"
            )
        count = counts.pop()
        if has_targets and count != 1:
            raise ValueError(
                f"boxes, masks and keypoints go with one image or one video per sample, got a batch of {count}; "
                "for batches use DADA.draw_params, apply_batch and affine_matrices"
            )
        self._follow_worker()
        tensors = [picture for picture in pictures if isinstance(picture, torch.Tensor)]
        if all(self._goes_through_pil(tensor) for tensor in tensors):  # PIL images, or tensors PIL augments alike
            self._check_pil_generator()
            return {"drawn": None, "operations": random_params.draw_one(
                self.policy, self._slots, self.magnitude_std, self.generator
            )}
        drawn = self.draw_params(count, tensors[0].device)
        needs_operations = has_targets or len(tensors) < len(pictures)
        return {"drawn": drawn, "operations": random_params.applied_operations(drawn)[0] if needs_operations else None}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, Image.Image):
            return self._apply_pil(inpt, params["operations"], type(inpt))
        if isinstance(inpt, TARGET_TYPES):
            return move_target(inpt, [(spec, argument) for spec, argument, _ in params["operations"]], self.mask_fill)
        drawn = params["drawn"]
        if drawn is None:  # one CPU uint8 image: PIL's kernels, the same bytes as the tensor kernels, faster
            result = planes_of(self._apply_pil(pil_image_of(inpt), params["operations"], type(inpt)))
            return tv_tensors.wrap(result, like=inpt) if type(inpt) is not torch.Tensor else result
        if drawn.operations.device != inpt.device:
            drawn = drawn.to(inpt.device)
        if isinstance(inpt, tv_tensors.Video):
            drawn = _repeated(drawn, inpt.shape[-4])
        return self._apply_tensor(inpt, drawn)

    def _goes_through_pil(self, image: torch.Tensor) -> bool:
        """Whether one image tensor is augmented by the PIL kernels (:func:`prefers_pil`): drawn as a PIL
        image is (the same random numbers as a batch of one)."""
        return (
            image.ndim == 3
            and not isinstance(image, tv_tensors.Video)
            and not self._compile
            and self._generator_device() in (None, torch.device("cpu"))
            and prefers_pil(image[None], self.interpolation)
        )

    def _check_picture(self, picture: Image.Image | torch.Tensor) -> int:
        """Raise a clear error for an image DADA cannot augment; else return how many draws it needs."""
        if isinstance(picture, Image.Image):
            if picture.mode.startswith(_WIDE_MODES):
                scaling = (
                    "e.g. torch.from_numpy(numpy.asarray(image) / 65535.0)[None]"
                    if picture.mode.startswith("I;16") else "by the data's own range"
                )
                raise ValueError(
                    f"unsupported PIL image mode {picture.mode!r}: DADA's operations work on 8-bit levels; "
                    f"to keep the data, pass a float tensor scaled to [0, 1], {scaling}"
                )
            if picture.mode not in _COLOUR_MODES and picture.mode not in _ALPHA_MODES and picture.mode != "P":
                raise ValueError(
                    f"unsupported PIL image mode {picture.mode!r}; DADA works on L, RGB, RGBA, LA and P images "
                    f"(convert with image.convert('RGB'))"
                )
            return 1
        frame_dims = 4 if isinstance(picture, tv_tensors.Video) else 3
        what = "a video tensor [..., T, C, H, W]" if frame_dims == 4 else "an image tensor [..., C, H, W]"
        if picture.ndim < frame_dims:
            raise ValueError(f"expected {what}, got shape {tuple(picture.shape)}")
        if picture.layout != torch.strided:
            raise ValueError(f"expected a dense image tensor, got layout {picture.layout} (use tensor.to_dense())")
        if picture.dtype != torch.uint8 and not picture.is_floating_point():
            raise ValueError(f"expected a uint8 or floating point image tensor, got dtype {picture.dtype}")
        if picture.is_floating_point() and picture.device.type == "meta":
            raise ValueError(
                f"float images on the meta device cannot be checked to lie in [0, 1], got {picture.dtype} "
                f"shape {tuple(picture.shape)} on meta; use uint8, or DADA.draw_params and apply_batch"
            )
        channels, height, width = picture.shape[-3:]
        if channels not in (1, 3):
            raise ValueError(f"expected 1 or 3 channels, got {channels} (shape {tuple(picture.shape)})")
        if height < 1 or width < 1:
            raise ValueError(f"expected a non-empty image, got shape {tuple(picture.shape)}")
        self._check_range(picture)
        return math.prod(picture.shape[:-frame_dims])

    def _check_range(self, images: torch.Tensor) -> None:
        """Float images must lie in [0, 1]. Checked on every CPU call; on an accelerator only the
        first float batch per device is checked (one synchronisation), so later batches stay sync-free."""
        if not images.is_floating_point() or images.numel() == 0:
            return
        if str(images.device) in self._range_checked:
            return
        low, high = (value.item() for value in torch.aminmax(images.detach()))
        if not 0 <= low <= high <= 1:
            found = "NaN values" if math.isnan(low) or math.isnan(high) else f"values in [{low:.4g}, {high:.4g}]"
            raise ValueError(
                f"DADA expects float images in [0, 1] (or uint8 in [0, 255]), found {found}; "
                "apply it before Normalize, or scale the images to [0, 1]"
            )
        if images.device.type != "cpu":
            self._range_checked.add(str(images.device))

    def _fill_levels(self, input_type: type, floating: bool) -> tuple[tuple[float, ...] | None, tuple[float, ...]]:
        """The fill and the Cutout fill for an input of ``input_type`` (a PIL image counts as
        ``PIL.Image.Image``), on the kernels' 0..255 scale (see :func:`~dada_transforms.fill.fill_levels`)."""
        if issubclass(input_type, Image.Image):
            input_type = Image.Image
        fill = self._fills.get(input_type, self._fills.get("others"))
        cutout_fill = CUTOUT_FILL
        if self._cutout_fill is not None:
            cutout_fill = fill_levels(self._cutout_fill, floating, "cutout_fill")
        return None if fill is None else fill_levels(fill, floating), cutout_fill

    def _check_pil_generator(self) -> None:
        device = self._generator_device()
        if device is not None and device.type != "cpu":
            raise ValueError(f"PIL images need a CPU generator, got one on {device}")

    def _apply_pil(self, image: Image.Image, operations: Operations, input_type: type) -> Image.Image:
        """Apply ``operations`` to a PIL image, filling as ``fill`` says for ``input_type`` (the caller's input)."""
        if image.mode == "P" and not image.getpalette():  # no palette: augment the indices as levels
            levels = self._apply_pil(Image.frombytes("L", image.size, image.tobytes()), operations, input_type)
            result = Image.frombytes("P", image.size, levels.tobytes())
            result.info.update(image.info)
            return result
        if image.mode == "P":
            converted = self._apply_pil(image.convert("RGB"), operations, input_type)
            result = converted.quantize(palette=image, dither=Image.Dither.NONE)
            result.info.update(image.info)
            return result
        channels = len(image.getbands())
        fill, cutout_fill = self._fill_levels(input_type, floating=False)
        fill = None if fill is None else fill_for_channels(fill, channels)
        cutout_fill = fill_for_channels(cutout_fill, channels)
        resample = _RESAMPLING[self.interpolation]
        for spec, argument, center in operations:
            options = PilOptions(fill, cutout_fill, resample, center)
            if image.mode in _ALPHA_MODES and not spec.geometric and spec.name != "Cutout":
                *colour_bands, alpha = image.split()
                colour = Image.merge(_ALPHA_MODES[image.mode], colour_bands)
                image = Image.merge(image.mode, (*spec.pil(colour, argument, options).split(), alpha))
            else:
                image = spec.pil(image, argument, options)
        return image

    def _apply_tensor(self, images: torch.Tensor, drawn: random_params.DrawnParams) -> torch.Tensor:
        channels, height, width = images.shape[-3:]
        batch = images.reshape(-1, channels, height, width).as_subclass(torch.Tensor)
        result = self._apply_batch(batch, drawn, type(images)).reshape(images.shape)
        return tv_tensors.wrap(result, like=images) if type(images) is not torch.Tensor else result

    def apply_batch(self, images: torch.Tensor, drawn: random_params.DrawnParams) -> torch.Tensor:
        """Apply drawn parameters to a batch ``[N, C, H, W]``, without host synchronisation off the CPU.

        On the CPU, uint8 images with nearest resampling go through PIL's kernels when that is
        faster (one image, or large images: :func:`~dada_transforms.batch_pil.prefers_pil`);
        the bytes are the same either way."""
        return self._apply_batch(images, drawn, type(images))

    def _apply_batch(self, images: torch.Tensor, drawn: random_params.DrawnParams, input_type: type) -> torch.Tensor:
        """:meth:`apply_batch`, filling as ``fill`` says for ``input_type``."""
        if not self._compile and prefers_pil(images, self.interpolation):
            result = images.contiguous().clone()
            for index, operations in enumerate(random_params.applied_operations(drawn)):
                if operations:
                    result[index] = planes_of(self._apply_pil(pil_image_of(images[index]), operations, input_type))
            return result
        kinds = self._table(torch.device("cpu")).kinds_per_slot
        fill, cutout_fill = self._fill_levels(input_type, images.is_floating_point())
        options = TensorOptions(fill, cutout_fill, self.interpolation, drawn.cutout_centers[:, 0])
        apply = apply_operations
        if self._compile:  # one compiled function per configuration the graph is specialised on
            configuration = (kinds, options[:-1], images.dtype, str(images.device), tuple(images.shape))
            apply = compiled_apply_operations(configuration)
        warp_cache = None if self._compile or self.magnitude_std else self._warp_cache  # compiled: fixed shapes
        return apply(
            images, drawn.operations, drawn.applied, drawn.arguments, drawn.cutout_centers, options, kinds,
            warp_cache=warp_cache,
        )

    # -- pickling and display ---------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_tables"] = {}
        state["_range_checked"] = set()
        del state["_warp_cache"]  # a lock and tensors: a copy starts its own
        generator = self._generator
        if isinstance(generator, torch.Generator):  # as bytes: torch's multiprocessing pickler cannot share a Generator
            state_bytes = bytes(generator.get_state().numpy())
            generator = _PendingGenerator(str(generator.device), generator.initial_seed(), state_bytes)
        state["_generator"] = None if generator is None else tuple(generator)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if state["_generator"] is not None:  # an accelerator's is created on first use (not in every worker)
            pending = _PendingGenerator(*state["_generator"])
            state["_generator"] = pending.create() if torch.device(pending.device).type == "cpu" else pending
        state["_warp_cache"] = WarpCache()
        super().__setstate__(state)

    def extra_repr(self) -> str:
        name = repr(self.policy.name) if self.policy.name else "custom"
        parts = [
            f"policy={name} ({len(self.policy)} sub-policies)",
            f"interpolation={self.interpolation}",
            f"fill={self.fill}",
            f"cutout_fill={CUTOUT_FILL if self.cutout_fill is None else self.cutout_fill}",
        ]
        if self.mask_fill:
            parts.append(f"mask_fill={self.mask_fill}")
        if self.magnitude_std:
            parts.append(f"magnitude_std={self.magnitude_std}")
        return ", ".join(parts)


def _is_picture(item: Any) -> bool:
    """A PIL image, image tensor or video (not a box, mask or keypoint set)."""
    return isinstance(item, Image.Image) or (isinstance(item, torch.Tensor) and not isinstance(item, TARGET_TYPES))


def _repeated(drawn: random_params.DrawnParams, times: int) -> random_params.DrawnParams:
    """``drawn`` with each row repeated ``times`` times (one draw for every frame of a clip)."""
    return dataclasses.replace(
        drawn, **{field.name: getattr(drawn, field.name).repeat_interleave(times, 0) for field in dataclasses.fields(drawn)}
    )
