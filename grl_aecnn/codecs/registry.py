"""Codec name -> class: the one place that lists the codecs."""

from __future__ import annotations

from grl_aecnn.codecs.aecnn import AECNNCodec
from grl_aecnn.codecs.base import Codec, Spec
from grl_aecnn.codecs.bottlenetpp import BottleNetPPCodec
from grl_aecnn.codecs.deepjscc import DeepJSCCCodec

CODECS: dict[str, type[Codec]] = {cls.kind: cls for cls in (AECNNCodec, BottleNetPPCodec, DeepJSCCCodec)}


def codec_class(name: str) -> type[Codec]:
    if name not in CODECS:
        raise ValueError(f"unknown codec {name!r} (known: {', '.join(CODECS)})")
    return CODECS[name]


def build_codec(spec: Spec, shape: tuple[int, int, int]) -> Codec:
    """A fresh codec from its spec."""
    return codec_class(spec["codec"]).from_spec(spec, shape)
