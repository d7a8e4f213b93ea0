"""simvlm-jax: SimVLM (Wang et al., ICLR 2022) in JAX/Flax with a T5X-compatible trainer.

The repository's top level is the design card's: `simvlm_jax/` (the library and its commands), `gin/` (the
gin files), `tasks/` (SeqIO registrations, one module per dataset), `launch/` (multi-host launchers),
`tests/`. An install maps the three top-level folders into the package, so a wheel carries them:

    gin/     -> simvlm_jax/gin/       data files (no __init__.py: a top-level `gin` package would hide
                                      gin-config itself from anything run in the repository root)
    tasks/   -> simvlm_jax.tasks      (`--gin.MIXTURE_OR_TASK_MODULE="'simvlm_jax.tasks.vqa_v2'"`)
    launch/  -> simvlm_jax.launch     (`python -m simvlm_jax.launch.tpu_vm`)

`pip install .`, `pip install -e .` (PEP 660, through pyproject.toml's build system) and
`python -m build --wheel` all use this file.
"""

import os

from setuptools import find_namespace_packages, setup

# gin/, gin/models/, ...: folders of data files, shipped as simvlm_jax.gin, simvlm_jax.gin.models, ...
GIN_FOLDERS = sorted(d for d, _, files in os.walk("gin") if any(f.endswith(".gin") for f in files))
GIN_PACKAGES = ["simvlm_jax." + folder.replace(os.sep, ".") for folder in GIN_FOLDERS]

setup(
    name="simvlm-jax",
    version="0.1.0",
    description="SimVLM (Wang et al., ICLR 2022) pretraining, fine-tuning and evaluation in JAX/Flax",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11,<3.12",
    packages=[
        *find_namespace_packages(include=["simvlm_jax", "simvlm_jax.*"], exclude=["*__pycache__"]),
        "simvlm_jax.tasks",
        "simvlm_jax.launch",
        *GIN_PACKAGES,
    ],
    package_dir={"simvlm_jax.tasks": "tasks", "simvlm_jax.launch": "launch", "simvlm_jax.gin": "gin"},
    package_data={package: ["*.gin"] for package in GIN_PACKAGES},
    # Pinned to a set seen to co-install on Python 3.11 (../shared/known-good-versions.txt).
    install_requires=[
        "jax==0.10.2",
        "jaxlib==0.10.2",
        "flax==0.12.8",
        "optax==0.2.8",
        "orbax-checkpoint==0.12.8",
        "seqio==0.0.20",
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
        # The evaluation report page (simvlm_jax/report).
        "jinja2==3.1.6",
        "colorama==0.4.6",
        "lxml==6.1.3",
        # easy-VQA (the embedded benchmark's VQA task): the package ships the data itself.
        "easy-vqa==1.0",
    ],
    extras_require={
        # pytest-xdist: the suite runs on 2 workers (pyproject.toml's addopts), one per core of the
        # developers' machines (README: the measured time).
        "test": ["pytest==9.2.0", "pytest-xdist==3.8.0", "execnet==2.1.2", "ruff==0.17.6"],
        # The benchmark suite's peer part (benchmarks/peer.py): HuggingFace T5 in PyTorch, CPU build
        # (torch 2.13.0 is the CPU wheel on this project's machines; a newer one from PyPI is a CUDA build).
        "peer": ["torch==2.13.0", "transformers==5.24.0"],
    },
)
