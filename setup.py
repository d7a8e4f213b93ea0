"""simvlm-jax: SimVLM pretraining, fine-tuning and evaluation in JAX/Flax."""

import setuptools

# Pinned to a set seen to co-install on Python 3.11 (see docs/installation.md).
INSTALL_REQUIRES = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "seqio==0.0.20",
    "tensorflow-cpu==2.21.0",
    "tensorflow==2.21.0",
    "tensorflow-text==2.21.1",
    "tensorflow-datasets==4.9.10",
    "importlib_resources==7.1.0",
    "gin-config==0.5.0",
    "clu==0.0.12",
    "sentencepiece==0.2.3",
    "tensorboard==2.21.0",
    "numpy==2.4.6",
    "pillow==13.0.0",
    "absl-py==2.5.1",
    "matplotlib==3.11.2",
    # Reference scorers (simvlm_jax.metrics); METEOR and the PTB tokenizer need a Java runtime.
    "pycocoevalcap==1.2",
    "pycocotools==2.0.11",
    "sacrebleu==2.6.0",
    "portalocker==4.4.2",
    "regex==2026.11.19",
    "tabulate==0.10.0",
    "colorama==0.4.6",
    "lxml==6.1.3",
    # easy-VQA (the embedded benchmark's VQA task): the package ships the data itself.
    "easy-vqa==1.0",
]

EXTRAS_REQUIRE = {
    "test": ["pytest==9.2.0"],
}

setuptools.setup(
    name="simvlm-jax",
    version="0.1.0",
    description="SimVLM (Wang et al., ICLR 2022) in JAX/Flax with a T5X-compatible trainer",
    python_requires=">=3.11,<3.12",
    packages=setuptools.find_packages(include=["simvlm_jax", "simvlm_jax.*"]) + ["simvlm_jax.tasks"],
    package_dir={"simvlm_jax.tasks": "tasks"},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
)
