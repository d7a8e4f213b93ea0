"""simvlm-jax: SimVLM (Wang et al., ICLR 2022) pretraining, fine-tuning and evaluation in JAX/Flax.

Layers, in the direction of the imports: `data` (SeqIO preprocessors, feature converter, embedded
datasets) -> `network` (Flax modules) -> `models` (loss, scoring, decoding) -> `trainer` (compiled
steps) -> entry points (`train`). `simvlm_jax.tasks` (the repository's tasks/ folder) registers tasks.
"""

__version__ = "0.1.0"
