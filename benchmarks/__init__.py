"""Benchmarks of simvlm-jax: `python -m benchmarks.run --suite=cpu|gpu --out=FILE.json`."""
