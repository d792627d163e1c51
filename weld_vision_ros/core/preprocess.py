"""The one preprocessing preset shared by training (eval) and the ONNX node.

Training's evaluation transform and the node's inference both call `preprocess`; the
preset travels inside the exported model's metadata, so a model is always fed the way
it was trained.

Two crops (`PreprocessPreset.crop`):

- 'frame': the whole frame resized to the input; the relief channel is the height above
  the frame's median depth. Models exported before the crop existed behave this way.
- 'seam': the seam is located on the depth image (`core.measure.locate_seam`: robust plate
  fit, raised bead, principal axis in the plate plane), and a strip of
  `strip_length_mm` x `strip_width_mm` on the plate, centred on the bead and running
  along the seam, is sampled onto the input by one perspective warp: the seam runs
  horizontally, at a fixed metric scale (input_width / strip_length_mm px per mm along,
  input_height / strip_width_mm across), whatever the camera distance or seam angle. The
  relief channel is the elevation above the fitted plate. The strip is sampled at twice
  the input resolution and area-averaged, so sub-pixel grooves (cracks) are attenuated
  rather than missed. When no seam is found (no plate, no bead) the strip is a horizontal
  one through the image centre on a fronto-parallel plane at the median depth (relief
  above that depth), and `CropInfo.seam_found` is False with the reason, so a caller can
  count such frames; with no depth at all the strip spans the image width.

The seam finder's settings are part of the preset (`seam_finder`: the MeasureConfig fields
locate_seam reads), so they travel in the model's contract like the rest: the strip a
model sees depends on its contract only, never on the rule node's live `measure.*` values
nor on a later change of MeasureConfig's defaults. A caller that has already located the
seam (the rule stage of the hybrid cascade) passes that location; it is used only when it
was found with exactly the preset's settings, else the seam is located again with them.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Mapping, Optional

import cv2
import numpy as np

from .camera import Intrinsics
from .measure import (SEAM_FINDER_FIELDS, MeasureConfig, MeasurementError, Plate, SeamFrame, SeamLocation,
                      locate_seam, seam_elevation_mm)

CHANNELS_RGB = 'rgb'
CHANNELS_RGBD = 'rgbd'
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_FRAME = 'frame'
CROP_SEAM = 'seam'
CROPS = (CROP_FRAME, CROP_SEAM)
SEAM_SUPERSAMPLING = 2              # strip samples per input pixel and axis (area-averaged)
# The seam finder of every model whose contract records none (all models exported before the
# field existed were trained and served with these MeasureConfig defaults of the time).
LEGACY_SEAM_FINDER: tuple[tuple[str, float], ...] = (
    ('lowres_width_px', 160), ('plane_inlier_mm', 0.6), ('plane_iterations', 32),
    ('min_plate_fraction', 0.3), ('bead_min_elevation_mm', 0.35), ('bead_noise_factor', 4.0),
    ('min_bead_area_mm2', 60.0), ('min_seam_length_mm', 15.0))


class PreprocessError(ValueError):
    """Inputs or a preset that preprocessing cannot use."""


@dataclass(frozen=True)
class PreprocessPreset:
    """How a frame becomes a model input.

    input_height, input_width: network input size [px]. channels: 'rgb' (3 channels) or
    'rgbd' (RGB + a relief channel). mean/std: per-channel normalisation of values in
    [0, 1] (RGB) and of the relief channel. depth_range_mm: relief is the height [mm]
    (above the frame's median depth for crop 'frame', above the fitted plate for 'seam')
    divided by this and clipped to [-1, 1]; no return is 0. crop: 'frame' (whole frame
    resized) or 'seam' (seam-aligned strip, see the module docstring). strip_length_mm,
    strip_width_mm: size of the seam strip on the plate along and across the seam [mm]
    (crop 'seam' only).
    """

    input_height: int = 224
    input_width: int = 224
    channels: str = CHANNELS_RGB
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    depth_range_mm: float = 5.0
    crop: str = CROP_FRAME
    strip_length_mm: float = 400.0
    strip_width_mm: float = 37.5
    seam_finder: tuple[tuple[str, float], ...] = LEGACY_SEAM_FINDER

    def __post_init__(self) -> None:
        if self.channels not in (CHANNELS_RGB, CHANNELS_RGBD):
            raise PreprocessError(f"channels must be 'rgb' or 'rgbd', got {self.channels!r}")
        if self.input_height < 16 or self.input_width < 16:
            raise PreprocessError(f'input size must be at least 16x16, got '
                                  f'{self.input_width}x{self.input_height}')
        n = self.num_channels
        if len(self.mean) != n or len(self.std) != n:
            raise PreprocessError(f'mean and std need {n} values for {self.channels!r}, got '
                                  f'{len(self.mean)} and {len(self.std)}')
        if any(s <= 0 for s in self.std):
            raise PreprocessError(f'std values must be positive, got {self.std}')
        if self.depth_range_mm <= 0:
            raise PreprocessError(f'depth_range_mm must be positive, got {self.depth_range_mm}')
        if self.crop not in CROPS:
            raise PreprocessError(f"crop must be 'frame' or 'seam', got {self.crop!r}")
        if not (self.strip_length_mm > 0 and self.strip_width_mm > 0):
            raise PreprocessError(f'strip_length_mm and strip_width_mm must be positive, got '
                                  f'{self.strip_length_mm} and {self.strip_width_mm}')
        if tuple(name for name, _ in self.seam_finder) != SEAM_FINDER_FIELDS:
            raise PreprocessError(f'seam_finder must set {", ".join(SEAM_FINDER_FIELDS)} in this order, '
                                  f'got {[name for name, _ in self.seam_finder]}')
        try:
            self.seam_measure()
        except ValueError as exc:
            raise PreprocessError(f'seam_finder: {exc}') from None

    def seam_measure(self) -> MeasureConfig:
        """The MeasureConfig the seam crop locates the seam with (only seam_finder matters)."""
        return MeasureConfig(**dict(self.seam_finder))

    @property
    def needs_depth(self) -> bool:
        """Depth is read for the relief channel and to find the seam."""
        return self.channels == CHANNELS_RGBD or self.crop == CROP_SEAM

    @property
    def num_channels(self) -> int:
        return 3 if self.channels == CHANNELS_RGB else 4

    @classmethod
    def for_channels(cls, channels: str, input_size: int = 224) -> 'PreprocessPreset':
        mean, std = IMAGENET_MEAN, IMAGENET_STD
        if channels == CHANNELS_RGBD:
            mean, std = mean + (0.0,), std + (0.5,)
        return cls(input_height=input_size, input_width=input_size, channels=channels,
                   mean=mean, std=std)

    def to_dict(self) -> dict:
        d = asdict(self)
        d['mean'], d['std'] = list(self.mean), list(self.std)
        d['seam_finder'] = dict(self.seam_finder)
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> 'PreprocessPreset':
        try:
            return cls(input_height=int(d['input_height']), input_width=int(d['input_width']),
                       channels=str(d['channels']), mean=tuple(float(v) for v in d['mean']),
                       std=tuple(float(v) for v in d['std']),
                       depth_range_mm=float(d.get('depth_range_mm', 5.0)),
                       # Models exported before the crop existed were fed whole frames.
                       crop=str(d.get('crop', CROP_FRAME)),
                       strip_length_mm=float(d.get('strip_length_mm', 400.0)),
                       strip_width_mm=float(d.get('strip_width_mm', 37.5)),
                       seam_finder=_seam_finder_from(d.get('seam_finder')))
        except KeyError as exc:
            raise PreprocessError(f'preprocess preset lacks {exc.args[0]!r}') from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def _seam_finder_from(d: Optional[Mapping]) -> tuple[tuple[str, float], ...]:
    if d is None:
        return LEGACY_SEAM_FINDER
    kinds = {name: type(value) for name, value in LEGACY_SEAM_FINDER}
    try:
        return tuple((name, kinds[name](d[name])) for name in SEAM_FINDER_FIELDS)
    except KeyError as exc:
        raise PreprocessError(f'preprocess preset seam_finder lacks {exc.args[0]!r}') from None


def relief_channel(depth_m: np.ndarray, depth_range_mm: float) -> np.ndarray:
    """Height above the frame's median depth, scaled to [-1, 1]; 0 where no return."""
    finite = np.isfinite(depth_m)
    if not finite.any():
        return np.zeros(depth_m.shape, np.float32)
    median_m = float(np.median(depth_m[finite]))
    relief = (median_m - depth_m) * np.float32(1000.0 / depth_range_mm)
    relief = np.where(finite, relief, 0.0).astype(np.float32)
    return np.clip(relief, -1.0, 1.0, out=relief)


@dataclass(frozen=True)
class CropInfo:
    """How a frame was cropped.

    seam_found: False when crop 'seam' found no seam and fell back to the centre strip
    (always True for crop 'frame'); reason: why not. seam_angle_deg: image direction of
    the seam [deg, from +x toward +y]. mm_per_px: strip sample spacing along the seam on
    the plate [mm] (0 for crop 'frame'). strip_to_image: for crop 'seam', the homography
    (row-major 3x3) from input pixel (x, y, 1) of the strip to image pixel coordinates.
    """

    seam_found: bool = True
    reason: str = ''
    seam_angle_deg: float = 0.0
    mm_per_px: float = 0.0
    strip_to_image: Optional[tuple[float, ...]] = None

    def to_image(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Image pixel coordinates of strip input pixels (x, y) (crop 'seam' only)."""
        if self.strip_to_image is None:
            raise PreprocessError('this crop has no strip-to-image mapping (crop frame)')
        h = np.asarray(self.strip_to_image, dtype=np.float64).reshape(3, 3)
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        w = h[2, 0] * x + h[2, 1] * y + h[2, 2]
        return (h[0, 0] * x + h[0, 1] * y + h[0, 2]) / w, (h[1, 0] * x + h[1, 1] * y + h[1, 2]) / w


@dataclass(frozen=True)
class CroppedFrame:
    """A frame at the network input size, before normalisation.

    rgb: uint8 (H, W, 3). relief: float32 (H, W) in [-1, 1], 0 where no return; None for
    an 'rgb' preset. Training augments these (geometry identically on both) before
    `to_tensor`.
    """

    rgb: np.ndarray
    relief: Optional[np.ndarray]
    info: CropInfo


def _check_inputs(rgb: np.ndarray, depth_m: Optional[np.ndarray], preset: PreprocessPreset,
                  intrinsics: Optional[Intrinsics]) -> None:
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise PreprocessError(f'rgb must be uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}')
    if preset.needs_depth and (depth_m is None or depth_m.shape != rgb.shape[:2]):
        what = 'rgbd preset' if preset.channels == CHANNELS_RGBD else "crop 'seam'"
        raise PreprocessError(f'{what} needs a depth image the size of the rgb image')
    if preset.crop == CROP_SEAM:
        if intrinsics is None:
            raise PreprocessError("crop 'seam' needs the camera intrinsics")
        if (intrinsics.width, intrinsics.height) != (rgb.shape[1], rgb.shape[0]):
            raise PreprocessError(f'intrinsics are for {intrinsics.width}x{intrinsics.height} but the '
                                  f'images are {rgb.shape[1]}x{rgb.shape[0]}')


def crop_frame(rgb: np.ndarray, depth_m: Optional[np.ndarray], preset: PreprocessPreset,
               intrinsics: Optional[Intrinsics] = None, seam: Optional[SeamLocation] = None) -> CroppedFrame:
    """The frame cropped and sampled to the input size (see the module docstring).

    rgb: uint8 (H, W, 3) RGB. depth_m: float32 (H, W) metres with NaN for no return;
    needed for 'rgbd' and for crop 'seam'. intrinsics: of the images; needed for 'seam'.
    seam: the seam already located on this frame (crop 'seam'; used only if found with the
    preset's seam_finder, see `reuses_seam`). Never fails on a frame without a seam: see
    `CropInfo.seam_found`.
    """
    _check_inputs(rgb, depth_m, preset, intrinsics)
    if preset.crop == CROP_SEAM:
        return _seam_strip(rgb, depth_m, preset, intrinsics, seam if reuses_seam(preset, seam) else None)
    size = (preset.input_width, preset.input_height)
    small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    relief = None
    if preset.channels == CHANNELS_RGBD:
        relief = cv2.resize(relief_channel(depth_m, preset.depth_range_mm), size,
                            interpolation=cv2.INTER_AREA)
    return CroppedFrame(small, relief, CropInfo())


def _fallback_plane(depth_m: np.ndarray, intr: Intrinsics, preset: PreprocessPreset) -> tuple[Plate, str]:
    """A fronto-parallel plate at the median depth; with no depth, one that fits the strip to the width."""
    finite = depth_m[np.isfinite(depth_m)]
    if finite.size:
        return Plate(np.array([0.0, 0.0, 1.0]), float(np.median(finite)), 0.0, 1.0), ''
    distance_m = preset.strip_length_mm * intr.fx / (1000.0 * intr.width)
    return Plate(np.array([0.0, 0.0, 1.0]), distance_m, 0.0, 1.0), '; no depth: the strip spans the image width'


def reuses_seam(preset: PreprocessPreset, seam: Optional[SeamLocation]) -> bool:
    """Whether a seam crop takes `seam` as it is: found with exactly the preset's seam finder."""
    return seam is not None and preset.crop == CROP_SEAM and seam.finder == preset.seam_finder


def _seam_strip(rgb: np.ndarray, depth_m: np.ndarray, preset: PreprocessPreset,
                intr: Intrinsics, seam: Optional[SeamLocation]) -> CroppedFrame:
    try:
        loc = seam if seam is not None else locate_seam(depth_m, intr, preset.seam_measure())
        plate, origin_mm, along, across = loc.plate, loc.origin_m * 1000.0, loc.along, loc.across
        s_centre = 0.5 * (loc.s_min_mm + loc.s_max_mm)
        found, reason, angle = True, '', loc.angle_deg
    except MeasurementError as exc:
        plate, note = _fallback_plane(depth_m, intr, preset)
        d_mm = 1000.0 * plate.distance_m
        # The plate point seen at the image centre; the strip runs along the image rows.
        origin_mm = np.array([(0.5 * intr.width - intr.cx) / intr.fx * d_mm,
                              (0.5 * intr.height - intr.cy) / intr.fy * d_mm, d_mm])
        along, across = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
        s_centre, found, angle = 0.0, False, 0.0
        reason = f'no seam ({exc}): centre strip{note}'
    k = SEAM_SUPERSAMPLING
    cols, rows = preset.input_width * k, preset.input_height * k
    ds, dt = preset.strip_length_mm / cols, preset.strip_width_mm / rows
    seam = SeamFrame.build(intr, origin_mm, along, across, s_centre - 0.5 * preset.strip_length_mm + 0.5 * ds,
                           ds, -0.5 * preset.strip_width_mm + 0.5 * dt, dt, cols, rows)
    size = (preset.input_width, preset.input_height)
    big = cv2.warpPerspective(rgb, seam.homography, (cols, rows), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    small = cv2.resize(big, size, interpolation=cv2.INTER_AREA)
    relief = None
    if preset.channels == CHANNELS_RGBD:
        elev = seam_elevation_mm(depth_m, plate, seam)
        elev *= np.float32(1.0 / preset.depth_range_mm)
        np.clip(elev, -1.0, 1.0, out=elev)
        relief = cv2.resize(_fill_dropouts(elev), size, interpolation=cv2.INTER_AREA)
    up = np.array([[k, 0.0, 0.5 * (k - 1)], [0.0, k, 0.5 * (k - 1)], [0.0, 0.0, 1.0]])
    info = CropInfo(seam_found=found, reason=reason, seam_angle_deg=float(angle),
                    mm_per_px=preset.strip_length_mm / preset.input_width,
                    strip_to_image=tuple(float(v) for v in (seam.homography @ up).ravel()))
    return CroppedFrame(small, relief, info)


def _fill_dropouts(values: np.ndarray, window_px: int = 9) -> np.ndarray:
    """NaN samples replaced by the mean of their valid neighbours (normalised box filter), else 0.

    Glare takes out patches of the shiny bead; left at 0 they would look like pores.
    """
    valid = np.isfinite(values)
    if valid.all():
        return values
    weight = cv2.blur(valid.astype(np.float32), (window_px, window_px))
    total = cv2.blur(np.where(valid, values, np.float32(0.0)), (window_px, window_px))
    filled = np.where(weight > 0.05, total / np.maximum(weight, np.float32(1e-6)), np.float32(0.0))
    return np.where(valid, values, filled).astype(np.float32)


def to_tensor(rgb: np.ndarray, relief: Optional[np.ndarray], preset: PreprocessPreset) -> np.ndarray:
    """Normalise an input-size uint8 RGB image (and relief in [-1, 1]) to float32 (C, H, W)."""
    if rgb.shape[:2] != (preset.input_height, preset.input_width):
        raise PreprocessError(f'to_tensor needs a {preset.input_width}x{preset.input_height} image, '
                              f'got {rgb.shape[1]}x{rgb.shape[0]}')
    x = rgb.astype(np.float32) * np.float32(1 / 255)
    planes = [x[..., 0], x[..., 1], x[..., 2]]
    if preset.channels == CHANNELS_RGBD:
        if relief is None:
            raise PreprocessError('an rgbd preset needs the relief channel')
        planes.append(relief.astype(np.float32, copy=False))
    out = np.stack(planes, axis=0)
    mean = np.asarray(preset.mean, np.float32)[:, None, None]
    std = np.asarray(preset.std, np.float32)[:, None, None]
    return (out - mean) / std


def preprocess_with_info(rgb: np.ndarray, depth_m: Optional[np.ndarray], preset: PreprocessPreset,
                         intrinsics: Optional[Intrinsics] = None,
                         seam: Optional[SeamLocation] = None) -> tuple[np.ndarray, CropInfo]:
    """`preprocess`, and how the frame was cropped (whether a seam was found); seam: see crop_frame."""
    c = crop_frame(rgb, depth_m, preset, intrinsics, seam)
    return to_tensor(c.rgb, c.relief, preset), c.info


def preprocess(rgb: np.ndarray, depth_m: Optional[np.ndarray], preset: PreprocessPreset,
               intrinsics: Optional[Intrinsics] = None) -> np.ndarray:
    """One frame to a float32 (C, H, W) network input.

    rgb: uint8 (H, W, 3) RGB. depth_m: float32 (H, W) metres with NaN for no return;
    needed when `preset.needs_depth`. intrinsics: of the images, needed for crop 'seam'.
    """
    return preprocess_with_info(rgb, depth_m, preset, intrinsics)[0]
