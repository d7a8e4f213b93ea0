"""The peer comparison: our small training step against HuggingFace T5 in PyTorch, eager and compiled.

    pip install '.[peer]'        # CPU torch and transformers, pinned
    python -m benchmarks.run --suite=cpu --parts=peer

The PyTorch side is `transformers.T5ForConditionalGeneration` at the dimensions of `run.small_config()`
(6 + 6 layers, width 512, MLP 2048 with GELU, 8 heads of 64, a tied 32,000-entry vocabulary, dropout 0)
fed through `inputs_embeds`: the image cut into 8x8 patches by a Conv2d to width 512 plus a learned
position table (64 tokens), then the 32 prefix tokens' embeddings (96 encoder tokens); 32 decoder tokens;
batch 16; float32; the same loss (token-mean cross-entropy + 1e-4 z-loss) and AdamW. T5's relative
position buckets and its RMSNorm without biases differ from ours, a few MFLOPs either way.

Each framework's steps are timed interleaved, in `rounds` rounds: per round each runs `steps` steps back to
back and the first of them is dropped, so that drift of the shared machine hits all three alike. Throughput
is our analytic FLOP count of the step over its median time (torch's FlopCounterMode count of its step is
printed beside it: the two agree to a fraction of a percent). Then `pause_rounds` rounds time one step of
each after `pause_s` seconds idle (interleaved too): `peer_ratio_after_pause_vs_torch_compile` is torch.compile's
time over ours for such a step.
"""

from __future__ import annotations

import statistics
import time

import jax
import numpy as np

from benchmarks import measure
from simvlm_jax.model import flops as flops_lib
from simvlm_jax.network import SimVLMConfig


def _torch_step(cfg: SimVLMConfig, shapes: measure.Shapes, batch: dict[str, np.ndarray]):
    """(step() -> loss, FLOPs of one forward + backward by torch's counter) for HF T5 at cfg's sizes."""
    import torch
    import transformers

    torch.manual_seed(0)
    t5 = transformers.T5ForConditionalGeneration(
        transformers.T5Config(
            vocab_size=cfg.vocab_size,
            d_model=cfg.emb_dim,
            d_kv=cfg.head_dim,
            d_ff=cfg.mlp_dim,
            num_layers=cfg.num_encoder_layers,
            num_decoder_layers=cfg.num_decoder_layers,
            num_heads=cfg.num_heads,
            dropout_rate=0.0,
            feed_forward_proj="gelu",
            tie_word_embeddings=True,
            decoder_start_token_id=0,
        )
    )
    patches = torch.nn.Conv2d(cfg.num_channels, cfg.emb_dim, cfg.patch_size, stride=cfg.patch_size)
    image_positions = torch.nn.Parameter(torch.randn(cfg.num_image_tokens, cfg.emb_dim) * 0.02)
    parameters = [*t5.parameters(), *patches.parameters(), image_positions]
    optimizer = torch.optim.AdamW(parameters, lr=1e-4, weight_decay=0.01)

    images = torch.from_numpy(batch["encoder_image"]).permute(0, 3, 1, 2).contiguous()  # NCHW
    prefix = torch.from_numpy(batch["encoder_input_tokens"]).long()
    decoder_inputs = torch.from_numpy(batch["decoder_input_tokens"]).long()
    targets = torch.from_numpy(batch["decoder_target_tokens"]).long()

    def loss_fn():
        image_tokens = patches(images).flatten(2).transpose(1, 2) + image_positions  # [B, 64, D]
        embedded = torch.cat([image_tokens, t5.shared(prefix)], dim=1)  # [B, 96, D]
        logits = t5(inputs_embeds=embedded, decoder_input_ids=decoder_inputs).logits  # [B, 32, V]
        log_z = torch.logsumexp(logits, dim=-1)
        picked = torch.gather(logits, -1, targets[..., None])[..., 0]
        return torch.mean(log_z - picked + 1e-4 * log_z.square())

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        optimizer.step()
        return loss.detach()

    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        loss_fn().backward()
    optimizer.zero_grad(set_to_none=True)
    return step, float(counter.get_total_flops())


def peer_benchmark(
    cfg: SimVLMConfig,
    shapes: measure.Shapes,
    rounds: int = 6,
    steps: int = 3,
    pause_rounds: int = 4,
    pause_s: float = 5.0,
) -> dict:
    """Median step seconds and achieved GFLOP/s of ours, HF T5 eager and HF T5 under torch.compile."""
    try:
        import torch
    except ImportError as error:
        raise RuntimeError("the peer part needs PyTorch and transformers: pip install '.[peer]'") from error

    batch = measure.random_batch(cfg, shapes)
    init, our_step = measure.train_step_fn(cfg)
    device_batch = jax.device_put(batch)
    state = [init(jax.random.key(0), device_batch)]

    def ours():
        state[0], loss = our_step(state[0], device_batch)
        return jax.block_until_ready(loss)

    eager, torch_flops = _torch_step(cfg, shapes, batch)
    compiled_step, _ = _torch_step(cfg, shapes, batch)
    compiled = torch.compile(compiled_step)
    started = time.perf_counter()
    for fn in (ours, eager, compiled):  # compile both sides before timing (torch.compile traces on call,
        for _ in range(3):  # and again once the optimizer's state exists)
            fn()
    compile_s = time.perf_counter() - started
    runners = {"ours": ours, "torch_eager": eager, "torch_compile": compiled}
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, fn in runners.items():
            for i in range(steps):
                t0 = time.perf_counter()
                fn()
                if i:  # the first step of each run is dropped
                    times[name].append(time.perf_counter() - t0)
    # A step after an idle pause (the first step of an interactive run, or of a step after evaluation):
    # each framework sleeps `pause_s`, then one step is timed; interleaved as above.
    paused: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(pause_rounds):
        for name, fn in runners.items():
            time.sleep(pause_s)
            t0 = time.perf_counter()
            fn()
            paused[name].append(time.perf_counter() - t0)
    analytic = flops_lib.step_flops(cfg, shapes.text_length, shapes.decoder_length).train * shapes.batch
    medians = {name: statistics.median(values) for name, values in times.items()}
    paused_medians = {name: statistics.median(values) for name, values in paused.items()}
    gflops = {name: analytic / seconds / 1e9 for name, seconds in medians.items()}
    return {
        "peer_step_s": medians,
        "peer_gflops": gflops,
        "peer_ratio_vs_torch_compile": gflops["ours"] / gflops["torch_compile"],
        "peer_ratio_vs_torch_eager": gflops["ours"] / gflops["torch_eager"],
        "peer_step_after_pause_s": paused_medians,
        "peer_ratio_after_pause_vs_torch_compile": paused_medians["torch_compile"] / paused_medians["ours"],
        "peer_pause_s": pause_s,
        "peer_flops_analytic_gflop": analytic / 1e9,
        "peer_flops_torch_counter_gflop": torch_flops / 1e9,
        "peer_torch": torch.__version__,
        "peer_torch_threads": torch.get_num_threads(),
        "peer_warmup_s": compile_s,
        "peer_rounds": rounds,
    }
