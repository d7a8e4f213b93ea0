"""simvlm-jax: SimVLM (Wang et al., ICLR 2022) pretraining, fine-tuning and evaluation in JAX/Flax.

Packages, in the direction of the imports (docs/architecture.md; tests/test_architecture.py checks it):
`network` (Flax modules), `data` (SeqIO preprocessors, feature converter, embedded datasets) and
`metrics` (SeqIO scorers) -> `model` (loss, scoring, decoding) and `tasks` (SeqIO registrations) ->
`training` (train loop, steps, checkpoints, partitioning) -> `cli` (flags, gin, start-up) -> the entry
points `python -m simvlm_jax.train | eval | infer | caption | inspect_checkpoint`. Gin files: `simvlm_jax/gin/`.
"""

__version__ = "0.1.0"
