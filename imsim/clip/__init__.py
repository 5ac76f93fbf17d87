"""CLIP over open_clip: resolving weights, uint8-in preprocessing, image and text encoders."""

from imsim.clip.model import ClipImageModule, LoadedClip, load_clip
from imsim.clip.preprocess import ClipPreprocess
from imsim.clip.weights import Weights, WeightsUnavailable, resolve, unavailable

__all__ = [
    "ClipImageModule",
    "ClipPreprocess",
    "LoadedClip",
    "Weights",
    "WeightsUnavailable",
    "load_clip",
    "resolve",
    "unavailable",
]
