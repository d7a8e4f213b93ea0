"""SimVLM's training interface over the network: PrefixLM loss, scoring and prediction.

`SimVLMModel` has the duck type of `t5x.models.BaseModel` (`loss_fn`, `eval_fn`, `score_batch`,
`predict_batch_with_aux`, `get_initial_variables`, `FEATURE_CONVERTER_CLS`, `optimizer_def`), so the
same object runs under our trainer and T5X's.

Batch features (from `SimVLMFeatureConverter`), B = batch size:
    encoder_image          float32 [B, S, S, C]   (or [B, N, S, S, C] for N images per example)
    encoder_image_mask     float32 [B, 1]         0 for text-only examples ([B, N] for N images; [B] also works)
    encoder_input_tokens   int32   [B, L_enc]     text prefix, 0 = padding
    decoder_input_tokens   int32   [B, L_dec]     targets shifted right, BOS = 0
    decoder_target_tokens  int32   [B, L_dec]     text suffix + EOS, 0 = padding
    decoder_loss_weights   int32   [B, L_dec]     1 on real target tokens
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Union

import flax
import jax
import jax.numpy as jnp
import numpy as np
import seqio

from simvlm_jax.model import decoding
from simvlm_jax.model import loss_metrics as metrics_lib
from simvlm_jax.data.feature_converter import SimVLMFeatureConverter
from simvlm_jax.network import SimVLMNetwork

Batch = Mapping[str, jax.Array]
PyTree = Any

_ENCODER_FEATURES = ("encoder_image", "encoder_image_mask", "encoder_input_tokens")


def cross_entropy_with_z_loss(
    logits: jax.Array, targets: jax.Array, label_smoothing: float, z_loss: float
) -> tuple[jax.Array, jax.Array]:
    """Token-level cross-entropy and z-loss.

    Args:
      logits: float32 [B, L, V]; targets: int32 [B, L].
    Returns:
      (total_loss [B, L], z_loss [B, L]); total includes z-loss. With label smoothing the loss is
      measured against the smoothed distribution minus its own entropy, so a perfect model scores 0.
    """
    vocab_size = logits.shape[-1]
    confidence = 1.0 - label_smoothing
    low_confidence = label_smoothing / (vocab_size - 1) if vocab_size > 1 else 0.0
    # Entropy of the smoothed target distribution (a constant), so the loss has minimum 0.
    normalizer = -(
        confidence * np.log(confidence) + (vocab_size - 1) * low_confidence * np.log(low_confidence + 1e-20)
    ) if label_smoothing > 0 else 0.0
    soft_targets = jax.nn.one_hot(targets, vocab_size) * (confidence - low_confidence) + low_confidence
    log_z = jax.nn.logsumexp(logits, axis=-1)  # [B, L]
    log_probs = logits - log_z[..., None]
    xent = -jnp.sum(soft_targets * log_probs, axis=-1) - normalizer
    z_term = z_loss * jnp.square(log_z)
    return xent + z_term, z_term


class SimVLMModel:
    """The PrefixLM model: loss on decoder targets only; the prefix (image + k tokens) is the encoder's."""

    FEATURE_CONVERTER_CLS = SimVLMFeatureConverter
    # The loss_fn metrics that are batch scalars divided by `loss_normalizer` (for gradient accumulation).
    LOSS_METRICS = ("loss", "cross_ent_loss", "z_loss")

    def __init__(
        self,
        module: SimVLMNetwork,
        input_vocabulary: seqio.Vocabulary,
        output_vocabulary: seqio.Vocabulary,
        optimizer_def: Any,
        label_smoothing: float = 0.0,
        z_loss: float = 1e-4,
        loss_normalizing_factor: Union[None, float, str] = "NUM_REAL_TARGET_TOKENS",
        default_decoder_params: Optional[Mapping[str, Any]] = None,
    ):
        """`loss_normalizing_factor`: "NUM_REAL_TARGET_TOKENS" (mean over real target tokens, default),
        a float (sum / factor), or None (the plain sum over tokens, T5X's default)."""
        self.module = module
        self.input_vocabulary = input_vocabulary
        self.output_vocabulary = output_vocabulary
        self.optimizer_def = optimizer_def
        self.label_smoothing = label_smoothing
        self.z_loss = z_loss
        if isinstance(loss_normalizing_factor, str) and loss_normalizing_factor != "NUM_REAL_TARGET_TOKENS":
            raise ValueError(f"Unknown loss_normalizing_factor {loss_normalizing_factor!r}.")
        self.loss_normalizing_factor = loss_normalizing_factor
        self.default_decoder_params = dict(default_decoder_params or {})

    # ----------------------------------------------------------------------------------------------
    # Initialisation.
    # ----------------------------------------------------------------------------------------------
    def get_initial_variables(
        self, rng: jax.Array, input_shapes: Mapping[str, tuple], input_types: Optional[Mapping[str, Any]] = None
    ) -> flax.core.FrozenDict:
        """Initial `params` and `params_axes` from feature shapes (e.g. from the feature converter)."""
        input_types = input_types or {}

        def dummy(name, default_dtype):
            return jnp.ones(input_shapes[name], input_types.get(name, default_dtype))

        batch = {
            "encoder_image": dummy("encoder_image", jnp.float32),
            "encoder_image_mask": dummy("encoder_image_mask", jnp.float32),
            "encoder_input_tokens": dummy("encoder_input_tokens", jnp.int32),
            "decoder_input_tokens": dummy("decoder_input_tokens", jnp.int32),
            "decoder_target_tokens": dummy("decoder_input_tokens", jnp.int32),
        }
        # Compiled: an eager init of even the tiny model dispatches thousands of small ops.
        init = jax.jit(lambda rng, batch: self.module.init({"params": rng, "dropout": rng}, **batch, enable_dropout=False))
        return flax.core.freeze(init(rng, batch))

    # ----------------------------------------------------------------------------------------------
    # Loss and scoring.
    # ----------------------------------------------------------------------------------------------
    def _compute_logits(self, params: PyTree, batch: Batch, dropout_rng: Optional[jax.Array] = None) -> jax.Array:
        """Logits float32 [B, L_dec, V]; dropout is on when `dropout_rng` is given."""
        rngs = {"dropout": dropout_rng} if dropout_rng is not None else None
        return self.module.apply(
            {"params": params},
            batch["encoder_image"],
            batch["encoder_image_mask"],
            batch["encoder_input_tokens"],
            batch["decoder_input_tokens"],
            batch["decoder_target_tokens"],
            enable_dropout=dropout_rng is not None,
            rngs=rngs,
        )

    def loss_fn(
        self, params: PyTree, batch: Batch, dropout_rng: Optional[jax.Array]
    ) -> tuple[jax.Array, metrics_lib.Metrics]:
        """PrefixLM loss: cross-entropy (+ z-loss) on decoder target tokens only.

        Returns (scalar loss, clu metrics). Metrics: loss, cross_ent_loss, z_loss, accuracy (per
        target token), loss_per_token/image_text and loss_per_token/text_only (the two data sources,
        per target token), num_target_tokens and num_examples (sums, for throughput).
        """
        logits = self._compute_logits(params, batch, dropout_rng)
        targets = batch["decoder_target_tokens"]
        weights = batch["decoder_loss_weights"].astype(jnp.float32)  # [B, L]
        token_loss, token_z = cross_entropy_with_z_loss(logits, targets, self.label_smoothing, self.z_loss)
        num_tokens = jnp.sum(weights)
        normalizer = self.loss_normalizer(batch)
        loss = jnp.sum(token_loss * weights) / normalizer
        z_loss = jnp.sum(token_z * weights) / normalizer

        has_image = _per_example_image_flag(batch["encoder_image_mask"])  # [B]
        correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
        xent = token_loss - token_z
        metrics = {
            "loss": metrics_lib.scalar_average(loss),
            "cross_ent_loss": metrics_lib.scalar_average(loss - z_loss),
            "z_loss": metrics_lib.scalar_average(z_loss),
            "accuracy": metrics_lib.weighted_average(correct, weights),
            "loss_per_token/image_text": metrics_lib.weighted_average(xent, weights * has_image[:, None]),
            "loss_per_token/text_only": metrics_lib.weighted_average(xent, weights * (1.0 - has_image[:, None])),
            "num_target_tokens": metrics_lib.Sum(total=num_tokens),
            "num_examples": metrics_lib.Sum(total=jnp.asarray(targets.shape[0], jnp.float32)),
        }
        return loss, metrics

    def loss_normalizer(self, batch: Batch) -> jax.Array:
        """The denominator of the loss: the batch's real target tokens (at least 1), a fixed factor,
        or 1 (loss_normalizing_factor "NUM_REAL_TARGET_TOKENS", a float, None)."""
        if self.loss_normalizing_factor is None:
            return jnp.asarray(1.0, jnp.float32)
        if isinstance(self.loss_normalizing_factor, str):
            return jnp.maximum(jnp.sum(batch["decoder_loss_weights"].astype(jnp.float32)), 1.0)
        return jnp.asarray(float(self.loss_normalizing_factor), jnp.float32)

    def eval_fn(self, params: PyTree, batch: Batch) -> tuple[jax.Array, metrics_lib.Metrics]:
        return self.loss_fn(params, batch, dropout_rng=None)

    def score_batch(
        self, params: PyTree, batch: Batch, return_intermediates: bool = False
    ) -> Union[jax.Array, tuple[jax.Array, Mapping[str, Any]]]:
        """Log-likelihood of each example's targets under the model: float32 [B] (sum over tokens)."""
        logits = self._compute_logits(params, batch)
        log_probs = jax.nn.log_softmax(logits, axis=-1)
        token_scores = jnp.take_along_axis(log_probs, batch["decoder_target_tokens"][..., None], axis=-1)[..., 0]
        scores = jnp.sum(token_scores * batch["decoder_loss_weights"], axis=-1)
        if return_intermediates:
            return scores, {"token_scores": token_scores}
        return scores

    # ----------------------------------------------------------------------------------------------
    # Prediction.
    # ----------------------------------------------------------------------------------------------
    def encode(self, params: PyTree, batch: Batch) -> tuple[jax.Array, jax.Array]:
        """(encoded [B, T_enc, D], encoder_mask [B, T_enc]) for the batch's image + prefix."""
        return self.module.apply(
            {"params": params}, *(batch[name] for name in _ENCODER_FEATURES), method=SimVLMNetwork.encode
        )

    # The keys `predict_batch_with_aux` understands in decoder_params / default_decoder_params.
    DECODER_PARAM_NAMES = frozenset({
        "method", "num_decodes", "beam_size", "return_all_decodes", "alpha", "temperature", "top_k", "top_p",
        "max_decode_length", "eos_id", "pad_id", "decode_rng",
    })

    def _initial_cache(self, params: PyTree, encoded: jax.Array, encoder_mask: jax.Array, max_length: int) -> PyTree:
        """The zeroed decoder key/value cache for B rows and `max_length` positions.

        Leaves: cached_key / cached_value [B, max_length, heads, kv] per self-attention layer, and
        scalar int32 `cache_index`, the decoder's step count (scanned layers: [B, layers, max_length, heads, kv]).
        """
        _, variables = self.module.apply(
            {"params": params},
            encoded,
            encoder_mask,
            jnp.zeros((encoded.shape[0], max_length), jnp.int32),
            decode=True,
            max_decode_length=max_length,
            mutable=["cache"],
            method=SimVLMNetwork.decode,
        )
        return variables["cache"]

    def _step_fn(
        self, params: PyTree, encoded: jax.Array, encoder_mask: jax.Array, max_length: int
    ) -> decoding.StepFn:
        """One cached decoder step over the rows of `encoded` [N, T_enc, D] (see decoding.StepFn)."""

        def step_fn(tokens, position, cache):
            positions = jnp.full(tokens.shape, position, jnp.int32)  # [N, 1]
            logits, updated = self.module.apply(
                {"params": params, "cache": cache},
                encoded,
                encoder_mask,
                tokens,
                decoder_positions=positions,
                decode=True,
                max_decode_length=max_length,
                mutable=["cache"],
                method=SimVLMNetwork.decode,
            )
            return logits[:, 0, :], updated["cache"]  # [N, V]

        return step_fn

    def predict_batch_with_aux(
        self,
        params: PyTree,
        batch: Batch,
        rng: Optional[jax.Array] = None,
        decoder_params: Optional[Mapping[str, Any]] = None,
        return_all_decodes: Optional[bool] = None,
        num_decodes: Optional[int] = None,
        prompt_with_targets: bool = False,
    ) -> tuple[jax.Array, Mapping[str, jax.Array]]:
        """Decodes a batch: the encoder runs once, the decoder steps with a key/value cache.

        Decoder settings come from `decoder_params`, falling back on `self.default_decoder_params`:
          method:             'greedy', 'beam' or 'sample'; default 'greedy' for one decode, 'beam'
                              for more.
          num_decodes (alias beam_size): beams, or independent samples; the `num_decodes` argument,
                              when given, wins. Default 1.
          return_all_decodes: as the argument of that name, which wins when given. Default False.
          alpha:              beam search length penalty ((5 + len) / 6) ** alpha; default 0.6 (T5X's).
          temperature, top_k, top_p: sampling (see decoding.temperature_sample); defaults 1.0, 0, 1.0.
          max_decode_length:  default the batch's decoder length L_dec.
          eos_id:             default the output vocabulary's; may be traced.
          pad_id:             an id never to generate (see decoding); default None, as T5X.
          decode_rng:         the sampling key, as T5X; or pass `rng` (not both). Default key(0).
        method, num_decodes, top_k, top_p, pad_id and max_decode_length must be Python values; alpha,
        temperature and eos_id may be traced.

        prompt_with_targets: as T5X's EncoderDecoderModel, the batch's `decoder_input_tokens` (BOS
        column dropped, EOS ids removed) is the decoder prompt: its non-zero tokens are forced at the
        start of the output, kept in the returned tokens and left out of the scores (see decoding).
        A text prompt for the encoder (e.g. "a picture of") needs no option: put it in
        `encoder_input_tokens`.

        Returns:
          (tokens int32 [B, L] with 0 after EOS, {"scores": float32 [B]}), or with return_all_decodes
          (tokens [B, num_decodes, L], {"scores": [B, num_decodes]}). Decodes are sorted best first
          (T5X sorts them worst first); the single answer is the best. Scores are summed
          log-probabilities of the generated tokens (beam search: divided by the length penalty).
        """
        settings = {**self.default_decoder_params, **(decoder_params or {})}
        unknown = set(settings) - self.DECODER_PARAM_NAMES
        if unknown:
            raise ValueError(
                f"Unknown decoder params {sorted(unknown)}; expected some of {sorted(self.DECODER_PARAM_NAMES)}"
            )
        if "num_decodes" in settings and "beam_size" in settings and settings["num_decodes"] != settings["beam_size"]:
            raise ValueError("decoder params num_decodes and beam_size disagree")
        if num_decodes is None:
            num_decodes = settings.get("num_decodes", settings.get("beam_size", 1))
        if return_all_decodes is None:
            return_all_decodes = settings.get("return_all_decodes", False)
        method = settings.get("method", "greedy" if num_decodes == 1 else "beam")
        if method not in ("greedy", "beam", "sample"):
            raise ValueError(f"Unknown decoding method {method!r}; expected 'greedy', 'beam' or 'sample'")
        if method == "greedy" and num_decodes != 1:
            raise ValueError(f"Greedy search gives one decode, not {num_decodes}")
        if rng is not None and settings.get("decode_rng") is not None:
            raise ValueError("Got a sampling key both as `rng` and as decoder_params['decode_rng']")
        max_length = int(settings.get("max_decode_length", batch["decoder_input_tokens"].shape[1]))
        eos_id = settings.get("eos_id", self.output_vocabulary.eos_id)
        pad_id = settings.get("pad_id")

        forced_prefix = None
        if prompt_with_targets:
            prompt = jnp.asarray(batch["decoder_input_tokens"], jnp.int32)[:, 1:]  # [B, L_dec - 1]
            forced_prefix = jnp.where(prompt == eos_id, 0, prompt)

        encoded, encoder_mask = self.encode(params, batch)  # [B, T_enc, D], [B, T_enc]
        batch_size = encoded.shape[0]
        cache = self._initial_cache(params, encoded, encoder_mask, max_length)
        if method == "greedy":
            step_fn = self._step_fn(params, encoded, encoder_mask, max_length)
            tokens, scores = decoding.greedy_search(
                step_fn, cache, batch_size, max_length, eos_id, forced_prefix=forced_prefix, pad_id=pad_id
            )
            tokens, scores = tokens[:, None], scores[:, None]
        else:
            # Rows b * num_decodes ... b * num_decodes + num_decodes - 1 belong to example b.
            wide_encoded = decoding.expand_to_beams(encoded, num_decodes)
            wide_mask = decoding.expand_to_beams(encoder_mask, num_decodes)
            step_fn = self._step_fn(params, wide_encoded, wide_mask, max_length)
            if method == "beam":
                tokens, scores = decoding.beam_search(
                    step_fn, cache, batch_size, max_length, eos_id, num_decodes,
                    alpha=settings.get("alpha", 0.6), forced_prefix=forced_prefix, pad_id=pad_id,
                )
            else:
                key = rng if rng is not None else settings.get("decode_rng")
                key = jax.random.key(0) if key is None else key
                wide_prefix = None if forced_prefix is None else decoding.expand_to_beams(forced_prefix, num_decodes)
                tokens, scores = decoding.temperature_sample(
                    step_fn, decoding.expand_cache(cache, batch_size, num_decodes), key,
                    batch_size * num_decodes, max_length, eos_id,
                    temperature=settings.get("temperature", 1.0), top_k=int(settings.get("top_k", 0)),
                    top_p=float(settings.get("top_p", 1.0)), forced_prefix=wide_prefix, pad_id=pad_id,
                )
                tokens = tokens.reshape(batch_size, num_decodes, max_length)
                scores = scores.reshape(batch_size, num_decodes)
                order = jnp.argsort(-scores, axis=-1)  # best first
                tokens = jnp.take_along_axis(tokens, order[..., None], axis=1)
                scores = jnp.take_along_axis(scores, order, axis=1)
        if return_all_decodes:
            return tokens, {"scores": scores}
        return tokens[:, 0], {"scores": scores[:, 0]}

    def predict_batch(self, params: PyTree, batch: Batch, rng: Optional[jax.Array] = None, **kwargs) -> jax.Array:
        return self.predict_batch_with_aux(params, batch, rng=rng, **kwargs)[0]


def _per_example_image_flag(image_mask: jax.Array) -> jax.Array:
    """[B] or [B, N] image-present mask -> float32 [B], 1 where the example has any image."""
    image_mask = image_mask.astype(jnp.float32)
    if image_mask.ndim == 2:
        image_mask = jnp.max(image_mask, axis=-1)
    return image_mask
