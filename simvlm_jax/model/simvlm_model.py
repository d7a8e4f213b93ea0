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

from simvlm_jax.data.feature_converter import SimVLMFeatureConverter
from simvlm_jax.model import decoder_settings, decoding, ranking
from simvlm_jax.model import loss_metrics as metrics_lib
from simvlm_jax.model.decoder_settings import DecoderSettings
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
    normalizer = (
        -(confidence * np.log(confidence) + (vocab_size - 1) * low_confidence * np.log(low_confidence + 1e-20))
        if label_smoothing > 0
        else 0.0
    )
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
        init = jax.jit(
            lambda rng, batch: self.module.init({"params": rng, "dropout": rng}, **batch, enable_dropout=False)
        )
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
    DECODER_PARAM_NAMES = decoder_settings.NAMES

    def _initial_cache(self, params: PyTree, encoded: jax.Array, encoder_mask: jax.Array, max_length: int) -> PyTree:
        """The decoder's cache for B rows and `max_length` positions.

        Leaves: cached_key / cached_value [B, heads, kv, max_length] per self-attention layer (zeros),
        cross_key / cross_value [B, heads, kv, T_enc] per cross-attention layer (the encoder output's
        keys and values, computed here once), and scalar int32 `cache_index`, the decoder's step count.
        Scanned layers put the layer axis second: [B, layers, ...].
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

    def _step_fn(self, params: PyTree, encoded: jax.Array, encoder_mask: jax.Array, max_length: int) -> decoding.StepFn:
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

        Decoder settings come from `decoder_params`, falling back on `self.default_decoder_params`; the
        `num_decodes` and `return_all_decodes` arguments win when given (keys and defaults:
        `decoder_settings.DecoderSettings`).

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
          Method 'rank' returns the best of the given candidates instead (model/ranking.py), with L their
          longest length + 1 and scores as `score_batch` gives them.
        """
        settings = DecoderSettings.resolve(
            decoder_params,
            self.default_decoder_params,
            num_decodes=num_decodes,
            return_all_decodes=return_all_decodes,
            rng=rng,
            decoder_length=batch["decoder_input_tokens"].shape[1],
            vocabulary_eos_id=self.output_vocabulary.eos_id,
        )
        forced_prefix = None
        if prompt_with_targets and settings.method == "rank":
            raise ValueError("prompt_with_targets does not apply to method 'rank' (candidates are whole targets)")
        if prompt_with_targets:
            prompt = jnp.asarray(batch["decoder_input_tokens"], jnp.int32)[:, 1:]  # [B, L_dec - 1]
            forced_prefix = jnp.where(prompt == settings.eos_id, 0, prompt)
        tokens, scores = self._decode(params, batch, settings, forced_prefix)  # [B, n, L], [B, n]
        if settings.return_all_decodes:
            return tokens, {"scores": scores}
        return tokens[:, 0], {"scores": scores[:, 0]}

    def _decode(
        self, params: PyTree, batch: Batch, settings: DecoderSettings, forced_prefix: Optional[jax.Array]
    ) -> tuple[jax.Array, jax.Array]:
        """(tokens int32 [B, n, L], scores float32 [B, n]), n = num_decodes, best first."""
        max_length, eos_id, pad_id, num_decodes = (
            settings.max_length,
            settings.eos_id,
            settings.pad_id,
            settings.num_decodes,
        )
        encoded, encoder_mask = self.encode(params, batch)  # [B, T_enc, D], [B, T_enc]
        batch_size = encoded.shape[0]
        if settings.method == "rank":
            return self._rank(params, encoded, encoder_mask, settings)
        cache = self._initial_cache(params, encoded, encoder_mask, max_length)
        if settings.method == "greedy":
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
            if settings.method == "beam":
                tokens, scores = decoding.beam_search(
                    step_fn,
                    cache,
                    batch_size,
                    max_length,
                    eos_id,
                    num_decodes,
                    alpha=settings.alpha,
                    forced_prefix=forced_prefix,
                    pad_id=pad_id,
                )
            else:
                key = jax.random.key(0) if settings.rng is None else settings.rng
                wide_prefix = None if forced_prefix is None else decoding.expand_to_beams(forced_prefix, num_decodes)
                tokens, scores = decoding.temperature_sample(
                    step_fn,
                    decoding.expand_cache(cache, batch_size, num_decodes),
                    key,
                    batch_size * num_decodes,
                    max_length,
                    eos_id,
                    temperature=settings.temperature,
                    top_k=settings.top_k,
                    top_p=settings.top_p,
                    forced_prefix=wide_prefix,
                    pad_id=pad_id,
                )
                tokens = tokens.reshape(batch_size, num_decodes, max_length)
                scores = scores.reshape(batch_size, num_decodes)
                order = jnp.argsort(-scores, axis=-1)  # best first
                tokens = jnp.take_along_axis(tokens, order[..., None], axis=1)
                scores = jnp.take_along_axis(scores, order, axis=1)
        return tokens, scores

    def _rank(
        self, params: PyTree, encoded: jax.Array, encoder_mask: jax.Array, settings: DecoderSettings
    ) -> tuple[jax.Array, jax.Array]:
        """The settings' candidates scored for each example (model/ranking.py): (tokens int32 [B, n, L],
        scores float32 [B, n]) of the n = num_decodes best, L = the longest candidate's tokens + EOS."""
        eos_id = settings.eos_id if isinstance(settings.eos_id, int) else self.output_vocabulary.eos_id
        targets = ranking.candidate_targets(self.output_vocabulary, settings.candidates, eos_id)

        def decode_logits(encoded, encoder_mask, decoder_input_tokens, decoder_target_tokens):
            return self.module.apply(
                {"params": params},
                encoded,
                encoder_mask,
                decoder_input_tokens,
                decoder_target_tokens,
                method=SimVLMNetwork.decode,
            )

        scores = ranking.score_candidates(decode_logits, encoded, encoder_mask, targets)
        return ranking.best_candidates(scores, targets, settings.num_decodes)

    def predict_batch(self, params: PyTree, batch: Batch, rng: Optional[jax.Array] = None, **kwargs) -> jax.Array:
        return self.predict_batch_with_aux(params, batch, rng=rng, **kwargs)[0]


def _per_example_image_flag(image_mask: jax.Array) -> jax.Array:
    """[B] or [B, N] image-present mask -> float32 [B], 1 where the example has any image."""
    image_mask = image_mask.astype(jnp.float32)
    if image_mask.ndim == 2:
        image_mask = jnp.max(image_mask, axis=-1)
    return image_mask
