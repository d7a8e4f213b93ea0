"""Data for simvlm-jax: embedded datasets, vocabularies, preprocessors and feature converters."""
