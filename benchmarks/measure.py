"""Timed pieces of the benchmark: matmul peak, train step, decoding, compile time, memory.

Imports only jax, flax, optax and `simvlm_jax.network` / `simvlm_jax.model.flops` / `simvlm_jax.model.decoding` /
`simvlm_jax.training.grad_accumulation` (no SeqIO or TensorFlow), so the GPU suite runs on a bare JAX machine.

The train step is the trainer's maths (`grad_accumulation.loss_and_grads` of a token-mean
cross-entropy + z-loss, AdamW, donated state) on random inputs of fixed shapes.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from simvlm_jax.model import decoding
from simvlm_jax.model import flops as flops_lib
from simvlm_jax.network import SimVLMConfig, SimVLMNetwork
from simvlm_jax.network.attention import CROSS_CACHE_NAMES
from simvlm_jax.training.grad_accumulation import loss_and_grads


@dataclasses.dataclass(frozen=True)
class Shapes:
    """One benchmark's inputs: batch, text-prefix and decoder lengths (images: config.image_size)."""

    batch: int
    text_length: int = 32
    decoder_length: int = 32


def timed(fn: Callable[[], Any], warmup: int = 1, repeats: int = 5) -> float:
    """Median wall seconds of fn() (its result blocked on) after `warmup` untimed calls."""
    for _ in range(warmup):
        jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ------------------------------------------------------------------------------------------ peak
def matmul_peak_gflops(size: int, dtype: str, repeats: int = 5) -> float:
    """GFLOP/s of a [size, size] @ [size, size] matmul in `dtype` (float32 accumulation for bf16)."""
    key_a, key_b = jax.random.split(jax.random.key(0))
    a = jax.random.normal(key_a, (size, size), jnp.dtype(dtype))
    b = jax.random.normal(key_b, (size, size), jnp.dtype(dtype))
    matmul = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32))
    seconds = timed(lambda: matmul(a, b), warmup=2, repeats=repeats)
    return 2.0 * size**3 / seconds / 1e9


def numpy_matmul_peak_gflops(size: int, repeats: int = 5) -> float:
    """GFLOP/s of a float32 [size, size] @ [size, size] matmul through numpy (the BLAS it ships with)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    seconds = timed(lambda: a @ b, warmup=2, repeats=repeats)
    return 2.0 * size**3 / seconds / 1e9


# ------------------------------------------------------------------------------------------ inputs
def random_batch(cfg: SimVLMConfig, shapes: Shapes, seed: int = 0) -> dict[str, np.ndarray]:
    """A batch of the model's features with every text position real (no padding)."""
    rng = np.random.default_rng(seed)
    b, size = shapes.batch, cfg.image_size
    targets = rng.integers(2, cfg.vocab_size, (b, shapes.decoder_length)).astype(np.int32)
    return {
        "encoder_image": rng.normal(size=(b, size, size, cfg.num_channels)).astype(np.float32),
        "encoder_image_mask": np.ones((b, 1), np.float32),
        "encoder_input_tokens": rng.integers(2, cfg.vocab_size, (b, shapes.text_length)).astype(np.int32),
        "decoder_input_tokens": np.pad(targets[:, :-1], ((0, 0), (1, 0))),
        "decoder_target_tokens": targets,
        "decoder_loss_weights": np.ones_like(targets),
    }


class _LossModel:
    """The trainer's loss (token-mean cross-entropy + 1e-4 z-loss) over a bare network."""

    LOSS_METRICS = ()

    def __init__(self, cfg: SimVLMConfig):
        self.module = SimVLMNetwork(cfg)

    def loss_normalizer(self, batch):
        return jnp.maximum(jnp.sum(batch["decoder_loss_weights"].astype(jnp.float32)), 1.0)

    def loss_fn(self, params, batch, rng):
        del rng
        logits = self.module.apply(
            {"params": params},
            batch["encoder_image"],
            batch["encoder_image_mask"],
            batch["encoder_input_tokens"],
            batch["decoder_input_tokens"],
            batch["decoder_target_tokens"],
        )  # [B, L_dec, V] float32
        log_z = jax.nn.logsumexp(logits, axis=-1)
        picked = jnp.take_along_axis(logits, batch["decoder_target_tokens"][..., None], axis=-1)[..., 0]
        weights = batch["decoder_loss_weights"].astype(jnp.float32)
        loss = jnp.sum((log_z - picked + 1e-4 * jnp.square(log_z)) * weights) / self.loss_normalizer(batch)
        return loss, {}


def train_step_fn(cfg: SimVLMConfig, num_microbatches: int = 1):
    """(init(rng, batch) -> state, jitted step(state, batch) -> (state, loss)) for `cfg`."""
    model = _LossModel(cfg)
    optimizer = optax.adamw(1e-4, weight_decay=0.01)

    def init(rng, batch):
        names = (
            "encoder_image",
            "encoder_image_mask",
            "encoder_input_tokens",
            "decoder_input_tokens",
            "decoder_target_tokens",
        )
        params = model.module.init(rng, *(batch[n] for n in names))["params"]
        return params, optimizer.init(params)

    def step(state, batch):
        params, opt_state = state
        (loss, _), grads = loss_and_grads(model, params, batch, None, num_microbatches)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    return jax.jit(init), jax.jit(step, donate_argnums=(0,))


def xla_flops(compiled) -> float | None:
    """FLOPs XLA's cost analysis reports for a compiled executable (None where unavailable)."""
    try:
        analysis = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - not every backend implements it
        return None
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else None
    return float(analysis["flops"]) if analysis and "flops" in analysis else None


def temp_bytes(compiled) -> int | None:
    """Temporary (activation) bytes of a compiled executable, from its memory analysis."""
    try:
        return int(compiled.memory_analysis().temp_size_in_bytes)
    except Exception:  # noqa: BLE001
        return None


def train_benchmark(
    cfg: SimVLMConfig, shapes: Shapes, peak_gflops: float, repeats: int = 5, num_microbatches: int = 1
) -> dict[str, float]:
    """Throughput and MFU of the train step of `cfg` on `shapes`, with analytic and XLA FLOPs."""
    init, step = train_step_fn(cfg, num_microbatches)
    batch = jax.device_put(random_batch(cfg, shapes))
    state = init(jax.random.key(0), batch)
    compiled = step.lower(state, batch).compile()
    analytic = flops_lib.step_flops(cfg, shapes.text_length, shapes.decoder_length).train * shapes.batch
    holder = [state]

    def run():
        holder[0], loss = compiled(holder[0], batch)
        return loss

    seconds = timed(run, warmup=2, repeats=repeats)
    from_xla = xla_flops(compiled)
    train_gflops = analytic / seconds / 1e9
    tokens = shapes.batch * (cfg.num_image_tokens + shapes.text_length + shapes.decoder_length)
    return {
        "step_s": seconds,
        "train_gflops": train_gflops,
        "mfu": train_gflops / peak_gflops,
        "examples_per_s": shapes.batch / seconds,
        "tokens_per_s": tokens / seconds,
        "analytic_gflop_per_step": analytic / 1e9,
        "xla_gflop_per_step": None if from_xla is None else from_xla / 1e9,
        "analytic_to_xla": None if not from_xla else analytic / from_xla,
        "temp_mib": None if temp_bytes(compiled) is None else temp_bytes(compiled) / 2**20,
    }


def _abstract_step(cfg: SimVLMConfig, shapes: Shapes):
    """(jitted step, abstract state, abstract batch) of `cfg`: enough to compile, nothing allocated."""
    init, step = train_step_fn(cfg)
    batch = jax.eval_shape(lambda: jax.tree.map(jnp.asarray, random_batch(cfg, shapes)))
    return step, jax.eval_shape(init, jax.random.key(0), batch), batch


def step_temp_mib(cfg: SimVLMConfig, shapes: Shapes) -> float | None:
    """Temporary (activation) memory of the compiled train step of `cfg`, in MiB."""
    step, state, batch = _abstract_step(cfg, shapes)
    size = temp_bytes(step.lower(state, batch).compile())
    return None if size is None else size / 2**20


def peak_memory_mib(cfg: SimVLMConfig, shapes: Shapes) -> dict[str, dict[str, float | None]]:
    """step_temp_mib as {'scan' | 'unrolled': {policy: MiB}} for the remat policies none, dots and
    full, with the layers scanned and unrolled."""
    return {
        layout: {
            policy: step_temp_mib(dataclasses.replace(cfg, remat_policy=policy, scan_layers=scan), shapes)
            for policy in ("none", "dots", "full")
        }
        for layout, scan in (("scan", True), ("unrolled", False))
    }


# ------------------------------------------------------------------------------------------ compile
def compile_seconds(cfg: SimVLMConfig, shapes: Shapes) -> float:
    """Seconds to lower and compile the train step of `cfg` (nothing is allocated)."""
    step, state, batch = _abstract_step(cfg, shapes)
    start = time.perf_counter()
    step.lower(state, batch).compile()
    return time.perf_counter() - start


# ------------------------------------------------------------------------------------------ decoding
def _encode(module, params, batch):
    return module.apply(
        {"params": params},
        batch["encoder_image"],
        batch["encoder_image_mask"],
        batch["encoder_input_tokens"],
        method=SimVLMNetwork.encode,
    )


def _without_cross_cache(cache):
    """The cache without its cross-attention keys/values: a step given it projects the encoder output
    again (and returns them again), as decoding did before they were cached."""
    if isinstance(cache, Mapping):
        return {k: _without_cross_cache(v) for k, v in cache.items() if k not in CROSS_CACHE_NAMES}
    return cache


def cached_decode_fn(
    cfg: SimVLMConfig, max_length: int, method: str = "greedy", num_decodes: int = 1, cache_cross_attention: bool = True
):
    """jitted (params, batch) -> tokens: encoder once, then one cached decoder step per token, as
    SimVLMModel.predict_batch_with_aux decodes (greedy [B, L]; 'beam' and 'sample': [B * num_decodes, L],
    the rows of example b adjacent). Beam search keeps num_decodes hypotheses per example; sampling draws
    num_decodes rows per example at temperature 1. With cache_cross_attention=False each step re-projects
    the encoder output to cross-attention keys/values (only the self-attention keys/values are cached): the
    path before those were cached, kept here as the benchmark's reference."""
    if (method == "greedy") != (num_decodes == 1) or method not in ("greedy", "beam", "sample"):
        raise ValueError(f"method {method!r} with num_decodes {num_decodes}")
    module = SimVLMNetwork(cfg)

    def run(params, batch):
        encoded, mask = _encode(module, params, batch)
        batch_size = encoded.shape[0]
        tokens = jnp.zeros((batch_size, max_length), jnp.int32)
        _, variables = module.apply(
            {"params": params}, encoded, mask, tokens, decode=True, mutable=["cache"], method=SimVLMNetwork.decode
        )
        wide_encoded = decoding.expand_to_beams(encoded, num_decodes)
        wide_mask = decoding.expand_to_beams(mask, num_decodes)

        def step_fn(token, position, cache):
            if not cache_cross_attention:
                cache = _without_cross_cache(cache)
            logits, updated = module.apply(
                {"params": params, "cache": cache},
                wide_encoded,
                wide_mask,
                token,
                decoder_positions=jnp.full(token.shape, position, jnp.int32),
                decode=True,
                mutable=["cache"],
                method=SimVLMNetwork.decode,
            )
            return logits[:, 0], updated["cache"]

        cache = variables["cache"]
        # eos_id -1: never stops early, so every row decodes exactly max_length tokens.
        if method == "greedy":
            return decoding.greedy_search(step_fn, cache, batch_size, max_length, eos_id=-1)[0]
        if method == "beam":
            tokens = decoding.beam_search(step_fn, cache, batch_size, max_length, -1, num_decodes)[0]
            return tokens.reshape(batch_size * num_decodes, max_length)
        wide_cache = decoding.expand_cache(cache, batch_size, num_decodes)
        rows = batch_size * num_decodes
        return decoding.temperature_sample(step_fn, wide_cache, jax.random.key(0), rows, max_length, -1)[0]

    return jax.jit(run)


def uncached_greedy_fn(cfg: SimVLMConfig, max_length: int):
    """The reference: at every step the whole decoder reruns over the [B, max_length] prefix (causal
    mask, so later zeros cannot matter) and the argmax at the current position is kept."""
    module = SimVLMNetwork(cfg)

    def run(params, batch):
        encoded, mask = _encode(module, params, batch)
        batch_size = encoded.shape[0]

        def body(t, tokens):
            inputs = jnp.pad(tokens[:, :-1], ((0, 0), (1, 0)))  # BOS 0, then the tokens so far
            logits = module.apply({"params": params}, encoded, mask, inputs, method=SimVLMNetwork.decode)
            chosen = jnp.argmax(jax.lax.dynamic_index_in_dim(logits, t, axis=1, keepdims=False), axis=-1)
            return jax.lax.dynamic_update_index_in_dim(tokens, chosen.astype(jnp.int32), t, axis=1)

        return jax.lax.fori_loop(0, max_length, body, jnp.zeros((batch_size, max_length), jnp.int32))

    return jax.jit(run)


def decode_benchmark(
    cfg: SimVLMConfig, batch_size: int, max_length: int = 128, repeats: int = 3, num_decodes: int = 4
) -> dict:
    """Greedy decoding of max_length tokens, cached vs full recomputation (same tokens checked); beam
    search and sampling of num_decodes rows per example, cached (their speed in tokens of every row)."""
    batch = jax.device_put(random_batch(cfg, Shapes(batch_size, decoder_length=max_length)))
    params = jax.jit(SimVLMNetwork(cfg).init)(
        jax.random.key(0),
        batch["encoder_image"],
        batch["encoder_image_mask"],
        batch["encoder_input_tokens"],
        batch["decoder_input_tokens"],
        batch["decoder_target_tokens"],
    )["params"]
    cached = cached_decode_fn(cfg, max_length)
    self_only = cached_decode_fn(cfg, max_length, cache_cross_attention=False)
    uncached = uncached_greedy_fn(cfg, max_length)
    tokens = [np.asarray(fn(params, batch)) for fn in (cached, self_only, uncached)]
    same = all(np.array_equal(tokens[0], other) for other in tokens[1:])
    cached_s = timed(lambda: cached(params, batch), warmup=0, repeats=repeats)
    self_only_s = timed(lambda: self_only(params, batch), warmup=0, repeats=repeats)
    uncached_s = timed(lambda: uncached(params, batch), warmup=0, repeats=max(1, repeats - 1))
    wide_s = {}
    for method in ("beam", "sample"):
        fn = cached_decode_fn(cfg, max_length, method, num_decodes)
        wide_s[method] = timed(lambda: fn(params, batch), warmup=1, repeats=repeats)
    row_tokens = batch_size * num_decodes * max_length
    return {
        "decode_tokens_per_s": batch_size * max_length / cached_s,
        "self_cache_only_decode_tokens_per_s": batch_size * max_length / self_only_s,
        "uncached_decode_tokens_per_s": batch_size * max_length / uncached_s,
        "kv_cache_speedup": uncached_s / cached_s,
        "cross_cache_speedup": self_only_s / cached_s,
        "decode_same_tokens": same,
        "decode_batch": batch_size,
        "decode_new_tokens": max_length,
        "beam_decode_row_tokens_per_s": row_tokens / wide_s["beam"],
        "sample_decode_row_tokens_per_s": row_tokens / wide_s["sample"],
        "decode_rows_per_example": num_decodes,
    }
