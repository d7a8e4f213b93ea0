r"""Pretrain or fine-tune SimVLM from gin files (T5X's `train.py` command line).

    python -m simvlm_jax.train --gin_file=gin/tiny_cpu.gin --gin.MODEL_DIR=/tmp/simvlm_tiny

Flags and macro names follow `t5x.train`: --gin_file (repeatable; installed gin files are found by
name from any directory), --gin_bindings, --gin.NAME=VALUE, --gin_search_paths, --tfds_data_dir, and
--multiprocess_gpu / --coordinator_address / --process_count / --process_index for multi-process runs
(`simvlm_jax.cli.distributed`: automatic on Cloud TPU slices and under SLURM; docs/scaling.md).
Configuration mistakes are reported in one or two lines (exit status 2) before any data or model is
built; `-v 1` adds tracebacks and library logs. The loop itself is `simvlm_jax.training.loop.train`.
"""

if __name__ == "__main__":
    from simvlm_jax.cli import startup

    startup.begin()  # before TensorFlow and JAX load: quiet logs, huge pages on the CPU backend

from simvlm_jax.training.loop import train  # noqa: E402  (gin files bind `train_script.train`)


def configure_and_train(gin_files, gin_bindings, gin_search_paths=(), finalize_config: bool = True):
    """What the command does once its flags are read: parse the gin files and bindings, then call
    `train()` as they configure it. Needs `train` importable as `__main__.train` (gin files write
    `import __main__ as train_script`), as it is under `python -m simvlm_jax.train`."""
    import gin

    from simvlm_jax.cli import gin_flags

    gin_flags.parse_gin_flags(gin_search_paths, gin_files, gin_bindings, finalize_config=finalize_config)
    try:  # the gin files registered `train` (as train_script.train): its configured version
        configured = gin.get_configurable(train)
    except (KeyError, ValueError):  # no gin file binds train
        configured = train
    return configured()


def main(argv) -> None:
    import seqio
    from absl import flags, logging

    from simvlm_jax.cli import distributed, errors, startup

    del argv
    flag_values = flags.FLAGS
    verbosity = flag_values.verbosity if flag_values["verbosity"].present else 0
    if not flag_values["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # progress, evals and samples are printed; -v 0 for all logs
        startup.drop_known_library_noise()
    if flag_values.tfds_data_dir:
        seqio.set_tfds_data_dir_override(flag_values.tfds_data_dir)

    def join_and_train():
        distributed.initialize(
            flag_values.coordinator_address,
            flag_values.process_count,
            flag_values.process_index,
            flag_values.multiprocess_gpu,
        )
        return configure_and_train(flag_values.gin_file, flag_values.gin_bindings, flag_values.gin_search_paths)

    errors.run_reporting_failures(join_and_train, "train", verbosity)


if __name__ == "__main__":
    from simvlm_jax.cli import gin_flags as _gin_flags

    _gin_flags.define_flags(multi_process=True)
    _gin_flags.run(main)
