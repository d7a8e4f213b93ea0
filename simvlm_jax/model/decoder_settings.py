"""How to decode: the settings `SimVLMModel.predict_batch_with_aux` reads from T5X-style `decoder_params`.

    settings = DecoderSettings.resolve(decoder_params, defaults, num_decodes=..., return_all_decodes=...,
                                       rng=..., decoder_length=L_dec, vocabulary_eos_id=...)

Keys (all optional):
  method             'greedy' | 'beam' | 'sample' | 'rank'; default 'rank' when candidates are given, else
                     'greedy' for one decode, 'beam' for more
  candidates         answer strings for 'rank': each is scored as the example's target, the best returned
                     (model/ranking.py)
  num_decodes        alias beam_size; default 1
  return_all_decodes default False
  alpha              beam length penalty ((5 + len) / 6) ** alpha; default 0.6, T5X's
  temperature, top_k, top_p   sampling; defaults 1.0, 0, 1.0
  max_decode_length  default L_dec
  eos_id             default the vocabulary's; may be traced
  pad_id             an id never generated; default None
  decode_rng         the sampling key (or pass `rng`, not both)
method, candidates, num_decodes, top_k, top_p, pad_id and max_decode_length must be Python values.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

NAMES = frozenset(
    {
        "method",
        "num_decodes",
        "beam_size",
        "return_all_decodes",
        "alpha",
        "temperature",
        "top_k",
        "top_p",
        "max_decode_length",
        "eos_id",
        "pad_id",
        "decode_rng",
        "candidates",
    }
)
METHODS = ("greedy", "beam", "sample", "rank")


@dataclasses.dataclass(frozen=True)
class DecoderSettings:
    method: str
    num_decodes: int
    return_all_decodes: bool
    max_length: int
    eos_id: Any  # int, or a traced scalar
    pad_id: Optional[int]
    alpha: Any = 0.6
    temperature: Any = 1.0
    top_k: int = 0
    top_p: float = 1.0
    rng: Any = None  # the sampling key (None: jax.random.key(0))
    candidates: tuple[str, ...] = ()  # method 'rank': the answers it chooses among

    @classmethod
    def resolve(
        cls,
        decoder_params: Optional[Mapping[str, Any]],
        defaults: Mapping[str, Any],
        *,
        num_decodes: Optional[int],
        return_all_decodes: Optional[bool],
        rng: Any,
        decoder_length: int,
        vocabulary_eos_id: int,
    ) -> "DecoderSettings":
        """`decoder_params` over `defaults`; the explicit arguments win where given. Raises ValueError for
        unknown keys and contradictory settings."""
        settings = {**defaults, **(decoder_params or {})}
        unknown = set(settings) - NAMES
        if unknown:
            raise ValueError(f"Unknown decoder params {sorted(unknown)}; expected some of {sorted(NAMES)}")
        if "num_decodes" in settings and "beam_size" in settings and settings["num_decodes"] != settings["beam_size"]:
            raise ValueError("decoder params num_decodes and beam_size disagree")
        if num_decodes is None:
            num_decodes = settings.get("num_decodes", settings.get("beam_size", 1))
        if return_all_decodes is None:
            return_all_decodes = settings.get("return_all_decodes", False)
        if isinstance(settings.get("candidates"), str):
            raise ValueError("decoder params candidates must be a sequence of answer strings, not one string")
        candidates = tuple(settings.get("candidates") or ())
        method = settings.get("method", "rank" if candidates else "greedy" if num_decodes == 1 else "beam")
        if method not in METHODS:
            raise ValueError(f"Unknown decoding method {method!r}; expected one of {', '.join(METHODS)}")
        if (method == "rank") != bool(candidates):
            raise ValueError("decoder params: method 'rank' needs candidates, and candidates need method 'rank'")
        if method == "rank" and num_decodes > len(candidates):
            raise ValueError(f"num_decodes {num_decodes} > the {len(candidates)} candidates to rank")
        if method == "greedy" and num_decodes != 1:
            raise ValueError(f"Greedy search gives one decode, not {num_decodes}")
        if rng is not None and settings.get("decode_rng") is not None:
            raise ValueError("Got a sampling key both as `rng` and as decoder_params['decode_rng']")
        return cls(
            method=method,
            num_decodes=int(num_decodes),
            return_all_decodes=bool(return_all_decodes),
            max_length=int(settings.get("max_decode_length", decoder_length)),
            eos_id=settings.get("eos_id", vocabulary_eos_id),
            pad_id=settings.get("pad_id"),
            alpha=settings.get("alpha", 0.6),
            temperature=settings.get("temperature", 1.0),
            top_k=int(settings.get("top_k", 0)),
            top_p=float(settings.get("top_p", 1.0)),
            rng=rng if rng is not None else settings.get("decode_rng"),
            candidates=candidates,
        )
