"""Command-line plumbing shared by the entry points (`python -m simvlm_jax.train`, eval, infer, caption).

- `startup`: the first call of every entry point, before TensorFlow or JAX is imported (quiet logs,
  host huge pages on the CPU backend);
- `gin_flags`: the T5X-style flags, gin parsing and its error messages (gin lives here and in the
  entry points only);
- `errors`: configuration mistakes printed as one or two lines instead of a traceback;
- `model_dir`: rebuild a trained model from its model directory.
"""
