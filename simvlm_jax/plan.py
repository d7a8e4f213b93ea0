r"""How much memory a training run needs on each device of a mesh, to read before renting the hardware.

    python -m simvlm_jax.plan --gin_file=gin/simvlm_huge.gin --mesh=data:32,fsdp:4,model:1 --chip=v4
    python -m simvlm_jax.plan --gin_file=gin/simvlm_huge.gin --mesh=fsdp:8 --chip=h100 --json
    python -m simvlm_jax.plan --gin_file=gin/tiny_cpu.gin --mesh=data:2,fsdp:2 --compile

Reads the gin files and --gin.NAME=VALUE bindings of `simvlm_jax.train` (MODEL_DIR may be left out) and needs
none of the mesh's devices: sizes come from jax.eval_shape and the logical-axis rules (the library is
`simvlm_jax.training.memory_plan`). --chip names one of v4, v5e, v5p, v6e, h100, h200 (default: all, and no
suggestions); --batch_size replaces BATCH_SIZE. --compile also compiles the real train step for the mesh on
emulated CPU devices (small meshes and models only) and prints XLA's own buffer sizes. A malformed --mesh, a
batch that does not split over it, an unknown chip: one line on stderr, exit status 2.
"""

import os
import re
import sys


def start_jax_for_the_plan(argv: list[str], environ) -> None:
    """Before JAX is imported: the planner runs on the CPU only, and with --compile on as many emulated
    CPU devices as --mesh names (XLA_FLAGS=--xla_force_host_platform_device_count=N)."""
    environ["JAX_PLATFORMS"] = "cpu"
    compile_flags = [a for a in argv if re.fullmatch(r"--(no)?compile(=\w+)?", a)]
    if not compile_flags or compile_flags[-1].lower() in ("--nocompile", "--compile=false", "--compile=0"):
        return
    mesh = next((a.split("=", 1)[1] for a in argv if a.startswith("--mesh=")), None)
    if mesh is None and "--mesh" in argv[:-1]:
        mesh = argv[argv.index("--mesh") + 1]
    sizes = re.findall(r":\s*(\d+)", mesh or "")
    if not sizes:
        return  # the plan reports the malformed mesh
    devices = 1
    for size in sizes:
        devices *= int(size)
    kept = re.sub(r"--xla_force_host_platform_device_count=\S+", "", environ.get("XLA_FLAGS", "")).split()
    environ["XLA_FLAGS"] = " ".join(kept + [f"--xla_force_host_platform_device_count={devices}"])


if __name__ == "__main__":
    start_jax_for_the_plan(sys.argv, os.environ)
    from simvlm_jax.cli import startup

    startup.begin()  # before TensorFlow and JAX load: quiet logs

import dataclasses  # noqa: E402
import json  # noqa: E402
from typing import Any, NamedTuple, Optional, Sequence  # noqa: E402

from simvlm_jax.training import chip_fit, memory_plan  # noqa: E402
from simvlm_jax.training.config_checks import ConfigError  # noqa: E402
from simvlm_jax.training.loop import train  # noqa: E402  (gin files bind `train_script.train`)

_UNUSED_MODEL_DIR = "/nonexistent/unused-by-simvlm_jax.plan"


class GinRun(NamedTuple):
    """What the planner reads from a training gin config."""

    model: Any
    lengths: dict
    batch_size: int
    num_microbatches: Optional[int]
    rules: Any
    num_partitions: int  # the configured mesh, to compare with --mesh
    fsdp_partitions: int


def read_gin_run(gin_files: Sequence[str], gin_bindings: Sequence[str], gin_search_paths=()) -> GinRun:
    """Parses the gin files as `simvlm_jax.train` does (gin files need `train` as `__main__.train`) and
    builds only the model; nothing else is constructed (not the partitioner, which would need the devices)."""
    import gin

    from simvlm_jax.cli import gin_flags

    bindings = [f"MODEL_DIR = '{_UNUSED_MODEL_DIR}'", *gin_bindings]
    gin_flags.parse_gin_flags(gin_search_paths, gin_files, bindings, finalize_config=False)

    def bound(selector, resolve=True) -> dict:
        try:
            return gin.get_bindings(selector, resolve_references=resolve)
        except (ValueError, KeyError):
            return {}

    train_args = bound(train, resolve=False)
    if "model" not in train_args or "train_dataset_cfg" not in train_args:
        raise ConfigError(
            "The gin files configure no training run (train.model, train.train_dataset_cfg): pass "
            "a training gin such as gin/simvlm_huge.gin or gin/tiny_cpu.gin."
        )
    dataset = train_args["train_dataset_cfg"].scoped_configurable_fn()
    partitioner = bound("partitioning.PjitPartitioner")
    return GinRun(
        model=train_args["model"].scoped_configurable_fn(),
        lengths=dict(dataset.task_feature_lengths),
        batch_size=dataset.batch_size,
        num_microbatches=bound("trainer.Trainer").get("num_microbatches"),
        rules=partitioner.get("logical_axis_rules") or memory_plan.LOGICAL_AXIS_RULES,
        num_partitions=int(partitioner.get("num_partitions") or 1),
        fsdp_partitions=int(partitioner.get("fsdp_partitions") or 1),
    )


def make_report(
    run: GinRun, mesh: memory_plan.MeshShape, chip_name: Optional[str], batch_size: Optional[int], compile_step: bool
) -> dict:
    """The plan as a JSON-ready dict; raises ConfigError on an unknown chip or a batch that does not split."""
    chips = [chip_name.lower()] if chip_name else list(chip_fit.CHIPS)
    config = run.model.module.config
    sizes = memory_plan.train_state_sizes(run.model, run.lengths, run.rules)
    batch = run.batch_size if batch_size is None else batch_size
    plan = memory_plan.plan_memory(sizes, config, run.lengths, batch, mesh, run.num_microbatches)
    compiled = None
    if compile_step:
        memory_plan.check_compile_fits(mesh, plan.parameter_count)
        compiled = memory_plan.compile_train_step(run.model, run.lengths, batch, mesh, run.rules, run.num_microbatches)
    fits = [chip_fit.fit(plan, name) for name in chips]
    advice = chip_fit.suggestions(sizes, config, run.lengths, plan, fits[0].hbm_bytes) if chip_name else []
    chip_rows = [
        {
            **dataclasses.asdict(f),
            "name": chip_fit.CHIPS[f.chip].name,
            "verdict": f.verdict,
            "headroom_bytes": f.headroom_bytes,
            "slice": chip_fit.CHIPS[f.chip].slice_name(mesh.devices),
            "basis": memory_plan.ESTIMATED,
        }
        for f in fits
    ]
    return {
        "mesh": {**dataclasses.asdict(mesh), "devices": mesh.devices},
        "parameters": {
            "count": plan.parameter_count,
            "bytes": plan.parameter_bytes,
            "by_part": plan.parameters_by_part,
            "basis": memory_plan.COMPUTED,
        },
        "batch": {
            "global": batch,
            "from": "BATCH_SIZE" if batch_size is None else "--batch_size",
            "per_device": plan.per_device_batch,
            "num_microbatches": plan.num_microbatches,
            "remat_policy": plan.remat_policy,
        },
        "per_device": {name: {"bytes": n, "basis": basis} for name, (n, basis) in plan.per_device().items()},
        "xla": compiled
        and {**dataclasses.asdict(compiled), "total_bytes": compiled.total_bytes, "basis": compiled.label},
        "fit": chip_rows,
        "suggestions": [
            {
                "change": s.change,
                "flags": s.flags,
                "total_bytes": s.plan.total_per_device,
                "basis": memory_plan.ESTIMATED,
            }
            for s in advice
        ],
        "train_flags": _train_flags(run, mesh),
    }


def _train_flags(run: GinRun, mesh) -> str:
    """What to add to the train command so that it uses this mesh ('' where the gin config already does)."""
    flags = []
    if mesh.model != run.num_partitions:
        flags.append(f"--gin.NUM_PARTITIONS={mesh.model}")
    if mesh.fsdp != run.fsdp_partitions:
        flags.append(f"--gin.partitioning.PjitPartitioner.fsdp_partitions={mesh.fsdp}")
    return " ".join(flags)


def _size(n: float) -> str:
    if abs(n) >= 2**30:
        return f"{n / 2**30:,.2f} GiB"
    return f"{n / 2**20:,.1f} MiB" if abs(n) >= 2**20 else f"{n / 2**10:,.1f} KiB"


_XLA_LABELS = {
    "argument_bytes": "arguments (train state, batch)",
    "output_bytes": "outputs (new train state, metrics)",
    "alias_bytes": "outputs in donated arguments",
    "temp_bytes": "temporaries",
    "total_bytes": "total (arguments + outputs - donated + temps)",
}


def format_text(report: dict, gin_files: Sequence[str]) -> str:
    mesh, params, batch, device = report["mesh"], report["parameters"], report["batch"], report["per_device"]
    mesh_name = f"data:{mesh['data']},fsdp:{mesh['fsdp']},model:{mesh['model']}"
    lines = [
        f"Memory plan: {', '.join(gin_files)} on mesh {mesh_name} ({mesh['devices']:,} devices)",
        "  computed  = exact, from the train state's shapes and the logical-axis rules (nothing allocated)",
        "  estimated = the activations by memory_estimate's count: main terms only, XLA's temporaries left out",
        "",
        f"Parameters: {params['count']:,} ({_size(params['bytes'])} in float32), computed",
        *(f"  {part:<28}{count:>15,}" for part, count in params["by_part"].items()),
        "",
        f"Batch: {batch['global']:,} ({batch['from']}), {batch['per_device']:,} per device "
        f"(/ data {mesh['data']} x fsdp {mesh['fsdp']}); NUM_MICROBATCHES {batch['num_microbatches']}, "
        f"REMAT_POLICY '{batch['remat_policy']}'",
        "",
        "Per device",
    ]
    ratio = device["optimizer_state"]["bytes"] / max(device["parameters"]["bytes"], 1)
    notes = {"optimizer_state": f"{ratio:.2f} x the parameters", "gradients": "sharded like the parameters"}
    for name, value in device.items():
        label = name.replace("_", " ") + (f" ({notes[name]})" if name in notes else "")
        lines.append(f"  {label:<44}{_size(value['bytes']):>12}  {value['basis']}")
    xla = report["xla"]
    if xla:
        lines += ["", f"XLA's figures, {xla['basis']}:"]
        lines += [f"  {label:<44}{_size(xla[key]):>12}" for key, label in _XLA_LABELS.items()]
    lines += [
        "",
        "Fit (HBM per chip, one JAX device per chip; tight = under 10% left, and the estimate is a lower bound)",
    ]
    for f in report["fit"]:
        headroom, share = f["headroom_bytes"], f["headroom_bytes"] / f["hbm_bytes"]
        left = f"{_size(headroom)} left ({share:.0%})" if headroom >= 0 else f"{_size(-headroom)} short"
        where = f"{f['name']} ({f['slice']})"
        lines.append(f"  {where:<28}{_size(f['hbm_bytes']):>11}  {f['verdict']:<13} {left}, estimated")
    if any(f["verdict"] != "fits" for f in report["fit"]) and len(report["fit"]) == 1:
        lines += ["", "Each of these alone would fit with 10% to spare, by the same estimate:"]
        lines += [
            f"  {s['change']}: {_size(s['total_bytes'])} per device   {s['flags']}" for s in report["suggestions"]
        ]
        if not report["suggestions"]:
            lines.append("  none: more devices are needed")
    if len(report["fit"]) > 1 and any(f["verdict"] != "fits" for f in report["fit"]):
        lines.append("  (--chip=NAME adds the changes that would make it fit there)")
    if report["train_flags"]:
        lines += ["", f"To train on this mesh ({mesh['devices']:,} devices): {report['train_flags']}"]
    return "\n".join(lines)


def main(argv) -> None:
    from absl import flags, logging

    from simvlm_jax.cli import errors, startup

    del argv
    values = flags.FLAGS
    verbosity = values.verbosity if values["verbosity"].present else 0
    if not values["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
        startup.drop_known_library_noise()

    def plan_and_print():
        if not values.mesh:
            raise ConfigError("--mesh is required: e.g. --mesh=data:32,fsdp:4,model:1 (data x fsdp x model devices).")
        mesh = memory_plan.MeshShape.parse(values.mesh)
        if values.chip:
            chip_fit.chip(values.chip)  # an unknown chip fails before the model is built
        run = read_gin_run(values.gin_file, values.gin_bindings, values.gin_search_paths)
        report = make_report(run, mesh, values.chip, values.batch_size, values.compile)
        print(json.dumps(report, indent=2) if values.json else format_text(report, values.gin_file), flush=True)

    errors.run_reporting_configuration_errors(plan_and_print, "plan", verbosity)


if __name__ == "__main__":
    from absl import flags

    from simvlm_jax.cli import gin_flags as _gin_flags

    _gin_flags.define_flags()
    flags.DEFINE_string("mesh", None, "The mesh to plan for: data:D,fsdp:F,model:M (D*F*M devices).")
    flags.DEFINE_string("chip", None, f"One of {', '.join(chip_fit.CHIPS)}; default: all, without suggestions.")
    flags.DEFINE_integer("batch_size", None, "Global batch; default BATCH_SIZE of the gin config.")
    flags.DEFINE_bool("compile", False, "Also compile the train step on emulated CPU devices (small meshes/models).")
    flags.DEFINE_bool("json", False, "Print the plan as JSON.")
    _gin_flags.run(main)
