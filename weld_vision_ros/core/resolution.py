"""What one depth frame can resolve: quantization step, sensor noise, dropouts.

A RealSense or Orbbec driver publishes aligned depth as 16UC1 in whole millimetres by
default: every depth sample is a multiple of the unit (1 mm). Sensor noise of a few tenths
of a unit *dithers* those steps: the mean of many quantized samples of one surface point
is then the true value to a small fraction of the unit, and the averaged cross-sections
of the bead measure below the unit. Noise well below the unit does not: the samples of a
stretch of surface all round to the same step and the average keeps the rounding error.

For a rounding quantizer of step q and Gaussian noise of sigma, the expected quantized
value differs from the truth by a periodic error whose first harmonic has amplitude
(q / pi) exp(-2 pi^2 sigma^2 / q^2): no amount of averaging at one point removes it. That
amplitude is `bias_mm` (without noise the error is the rounding sawtooth, peak q / 2, and
the first harmonic q / pi): relief evidence below a few times it is what the depth cannot
tell from its own steps.

The step comes from the frame (16UC1 unit x depth_scale_m) or, where depth arrives as
floats already rounded to a unit (a 16UC1 stream converted to 32FC1), from the values
themselves (`detect_depth_step_m`). Nothing here knows about ROS.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# A step finer than this is no quantization a depth camera applies (float32 metres near
# 0.2 m resolve about 15 nm): such values are treated as continuous.
_MIN_STEP_M = 1e-5


@dataclass(frozen=True)
class DepthResolution:
    """What the depth of one frame resolves [mm].

    step_mm: quantization step of the depth values (0: continuous, e.g. 32FC1 in metres).
    residual_mm: RMS deviation of the plate's depth samples from the fitted plate plane
        (sensor noise and quantization together).
    noise_mm: sensor noise estimated from it: sqrt(residual^2 - step^2 / 12).
    dropout_fraction: share of the image with no depth return.
    """

    step_mm: float
    residual_mm: float
    noise_mm: float
    dropout_fraction: float

    @property
    def dither(self) -> float:
        """Sensor noise in quantization steps (inf for continuous depth)."""
        return self.noise_mm / self.step_mm if self.step_mm > 0 else math.inf

    @property
    def bias_mm(self) -> float:
        """Rounding error that averaging cannot remove (0 for continuous depth)."""
        return quantization_bias_mm(self.step_mm, self.noise_mm)

    def describe(self) -> str:
        """One line for people: the resolution seen."""
        if self.step_mm <= 0:
            return f'continuous depth, noise {self.noise_mm:.2f} mm'
        return (f'{self.step_mm:.2f} mm depth steps, noise {self.noise_mm:.2f} mm '
                f'({self.dither:.2f} steps), rounding bias {self.bias_mm:.2f} mm')


def quantization_bias_mm(step_mm: float, noise_mm: float) -> float:
    """Amplitude of the rounding error left after averaging quantized samples [mm].

    (q / pi) exp(-2 pi^2 sigma^2 / q^2); 0 when the step is 0.
    """
    if step_mm <= 0:
        return 0.0
    ratio = noise_mm / step_mm
    return step_mm / math.pi * math.exp(-2.0 * math.pi ** 2 * ratio * ratio)


def sensor_noise_mm(residual_mm: float, step_mm: float) -> float:
    """Sensor noise behind a plate-fit residual that includes rounding to `step_mm`.

    Rounding adds step^2 / 12 to the residual variance where the plate's true depth runs
    over many steps (any tilt); it is taken out again here.
    """
    return math.sqrt(max(residual_mm * residual_mm - step_mm * step_mm / 12.0, 0.0))


def detect_depth_step_m(values_m: np.ndarray) -> float:
    """Quantization step [m] of depth values (finite, > 0), or 0 when they are continuous.

    Quantized values take few distinct levels, all multiples of one step: the smallest
    difference between distinct values is that step, and every other difference is a whole
    number of it. Continuous (noisy float) depth has differences of float rounding size.
    """
    levels = np.unique(values_m.astype(np.float64))
    if levels.size < 3:
        return 0.0
    diffs = np.diff(levels)
    step = float(diffs.min())
    if step < _MIN_STEP_M:
        return 0.0
    multiples = diffs / step
    if np.max(np.abs(multiples - np.round(multiples))) > 0.02:
        return 0.0
    # Report the step rounded to a micrometre: float32 values carry ~1e-8 m of rounding.
    return round(step, 6)
