"""Gin plumbing for the entry points (T5X's `gin_utils` names): flags, gin files, required macros, config.gin.

Gin files are found by name from any working directory: `--gin_file=gin/tiny_cpu.gin` (or `tiny_cpu.gin`)
is read from the path as given when it exists, else from `--gin_search_paths`, else from the package's own
gin files: the repository's top-level `gin/` in a checkout, `simvlm_jax/gin/` in an installed wheel
(`GIN_ROOT` is the folder holding that `gin/`). The files include each other as `gin/models/tiny.gin`, which
resolves from the repository root under any trainer (T5X's `t5x.train` included) and, here, from anywhere
(`GIN_ROOT` is searched last).
Every mistake found here raises `ConfigError` (a one-line message, see `cli.errors`).
"""

from __future__ import annotations

import difflib
import os
import re
from typing import Callable, NamedTuple, Optional, Sequence

import gin
import jax
from absl import app, logging
from gin import config_parser

import simvlm_jax
from simvlm_jax.training.config_checks import ConfigError

_REQUIRED_MARK = "%gin.REQUIRED"
_BARE_WORD = re.compile(r"^[A-Za-z0-9_./~:+-]+$")


def rewrite_gin_args(args: Sequence[str]) -> list[str]:
    """`--gin.NAME=VALUE` -> `--gin_bindings=NAME = VALUE` (T5X's shorthand for bindings)."""
    out = []
    for arg in args:
        if arg.startswith("--gin."):
            if "=" not in arg:
                raise ValueError(f"Gin flag {arg!r} has no '=': write --gin.NAME=VALUE.")
            name, value = arg[len("--gin.") :].split("=", 1)
            arg = f"--gin_bindings={name} = {_quote_bare_string(value)}"
        out.append(arg)
    return out


def _quote_bare_string(value: str) -> str:
    """Quotes a bare path or word (`/tmp/run`, `gs://b/x`, `my_mixture`), which gin cannot parse;
    numbers, True/False/None, references (@, %) and quoted or bracketed values are left alone."""
    if not _BARE_WORD.match(value) or value in ("True", "False", "None"):
        return value
    try:
        float(value)
        return value
    except ValueError:
        return repr(value)


class _Reference(NamedTuple):
    """`@name` or `@name()` in a parsed gin string."""

    name: str


class _Macro(NamedTuple):
    """`%NAME` in a parsed gin string."""

    name: str


class _Markers(config_parser.ParserDelegate):
    """Parses gin text into plain markers, resolving nothing (no imports, no registry)."""

    def configurable_reference(self, scoped_configurable_name, evaluate):
        return _Reference(scoped_configurable_name)

    def macro(self, macro_name):
        return _Macro(macro_name)


def _bindings() -> list[config_parser.BindingStatement]:
    """Every binding gin holds now, read back from `gin.config_str()` with gin's own parser."""
    parser = config_parser.ConfigParser(gin.config_str(), _Markers())
    return [statement for statement in parser if isinstance(statement, config_parser.BindingStatement)]


def _macro_bindings() -> dict[str, object]:
    """{macro name: value} (a macro is a binding with no configurable: `NAME = value`)."""
    return {b.selector: b.value for b in _bindings() if not b.arg_name and not b.scope}


def missing_required_macros() -> list[str]:
    """Names of macros still bound to %gin.REQUIRED after parsing (e.g. MODEL_DIR)."""
    return sorted(name for name, value in _macro_bindings().items() if value == _Macro(_REQUIRED_MARK[1:]))


def bound_macros() -> list[str]:
    return sorted(_macro_bindings())


def referenced_macros() -> set[str]:
    """Names of the macros some binding refers to (`%NAME`), including from other macros."""
    found: set[str] = set()

    def walk(value):
        if isinstance(value, _Macro):
            found.add(value.name)
        elif isinstance(value, (list, tuple, set)) and not isinstance(value, _Reference):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)

    for binding in _bindings():
        walk(binding.value)
    return found


def check_command_line_macros(gin_bindings: Sequence[str]) -> None:
    """A macro set on the command line that nothing uses is a misspelling: fail, suggesting the name."""
    used = referenced_macros()
    known = bound_macros()
    for binding in gin_bindings:
        name = binding.split("=", 1)[0].strip()
        if "=" not in binding or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) or name in used:
            continue
        close = difflib.get_close_matches(name, [m for m in known if m != name], n=3)
        hint = f" Did you mean {' or '.join(close)}?" if close else " Remove it, or bind the parameter directly."
        raise ConfigError(f"Gin macro {name} is set (by '{binding}') but no configuration uses it.{hint}")


def check_binding_syntax(binding: str) -> None:
    """A command-line binding gin cannot parse (most often a string with a space, unquoted: `--gin.MODEL_DIR=
    /runs/my run`) is a ConfigError naming the binding and the quoting rule, not gin's bare "Unable to parse"."""
    try:
        list(config_parser.ConfigParser(binding, _Markers()))
    except SyntaxError as error:
        name = binding.split("=", 1)[0].strip()
        value = binding.split("=", 1)[1].strip() if "=" in binding else ""
        raise ConfigError(
            f"Cannot parse the binding of {name} ({value!r}: {error.msg}). A string value needs gin's quotes "
            f"inside the shell's: --gin.{name}=\"'{value}'\"."
        ) from None


def explain_gin_error(error: Exception) -> str:
    """gin's message plus a suggestion for a misspelled configurable or parameter name."""
    message = str(error)
    wrong_param = re.search(r"Configurable '([^']+)' doesn't have a parameter named '([^']+)'", message)
    if wrong_param:
        selector, name = wrong_param.groups()
        params = _parameters_of(selector)
        close = difflib.get_close_matches(name, params, n=3)
        if close:
            return f"{message}\nDid you mean {' or '.join(selector + '.' + c for c in close)}?"
        if params:
            return f"{message}\nIts parameters: {', '.join(params)}."
    wrong_name = re.search(r"No configurable matching '([^']+)'", message)
    if wrong_name:
        names = sorted({b.selector for b in _bindings() if b.arg_name})
        close = difflib.get_close_matches(wrong_name.group(1), names, n=3)
        hint = (
            f"Did you mean {' or '.join(close)}?"
            if close
            else (
                "Check the spelling and that the gin file imports its module "
                "(from __gin__ import dynamic_registration)."
            )
        )
        return f"{message}\n{hint}"
    return message


def _parameters_of(selector: str) -> list[str]:
    import inspect

    try:
        configurable = gin.get_configurable(selector)
        fn = configurable.__init__ if inspect.isclass(configurable) else configurable
        return [p for p in inspect.signature(inspect.unwrap(fn)).parameters if p not in ("self", "args", "kwargs")]
    except (ValueError, TypeError):
        return []


GIN_ROOT = simvlm_jax.GIN_ROOT  # `include 'gin/models/tiny.gin'` resolves under it
PACKAGE_GIN_DIR = os.path.join(GIN_ROOT, "gin")


def define_flags(multi_process: bool = False) -> None:
    """T5X's flags for the gin entry points (train, eval, infer); the multi-process ones only for train
    (eval and infer read and decode in one process)."""
    from absl import flags

    flags.DEFINE_multi_string("gin_file", None, "Gin files to parse, in order (repeatable); e.g. gin/tiny_cpu.gin.")
    flags.DEFINE_multi_string("gin_bindings", [], "Individual gin bindings; --gin.NAME=VALUE is shorthand.")
    flags.DEFINE_list("gin_search_paths", [], "Folders searched for gin files before the installed ones.")
    flags.DEFINE_string("tfds_data_dir", None, "Overrides the TFDS data dir of every task.")
    if not multi_process:
        return
    flags.DEFINE_bool(
        "multiprocess_gpu", False, "Multi-process GPU run (T5X's flag): coordinator flags, or JAX's SLURM detection."
    )
    flags.DEFINE_string("coordinator_address", None, "host:port of process 0, for jax.distributed.")
    flags.DEFINE_integer("process_count", None, "Number of processes (multi-host).")
    flags.DEFINE_integer("process_index", None, "This process's index (multi-host).")


def resolve_gin_file(name: str, search_paths: Sequence[str] = ()) -> str:
    """The path of gin file `name`: as given, else under a search path, else among the installed gin files
    (where a leading `gin/` is optional). Raises ConfigError listing where it looked."""
    if os.path.isfile(name) or os.path.isabs(name):
        if os.path.isfile(name):
            return name
    candidates = [os.path.join(p, name) for p in search_paths]
    installed = name[len("gin/") :] if name.startswith("gin/") else name
    candidates.append(os.path.join(PACKAGE_GIN_DIR, installed))
    for path in candidates:
        if os.path.isfile(path):
            return path
    available = sorted(
        os.path.relpath(os.path.join(d, f), PACKAGE_GIN_DIR)
        for d, _, files in os.walk(PACKAGE_GIN_DIR)
        for f in files
        if f.endswith(".gin")
    )
    close = difflib.get_close_matches(installed, available, n=3)
    hint = (
        f" Did you mean {' or '.join('gin/' + c for c in close)}?"
        if close
        else (f" Installed gin files: {', '.join('gin/' + a for a in available if '/' not in a)}.")
    )
    raise ConfigError(
        f"Gin file {name!r} not found (looked in the working directory"
        f"{', ' + ', '.join(search_paths) if search_paths else ''} and {PACKAGE_GIN_DIR}).{hint}"
    )


def parse_gin_flags(
    gin_search_paths: Sequence[str],
    gin_files: Sequence[str],
    gin_bindings: Sequence[str],
    skip_unknown: bool = False,
    finalize_config: bool = True,
) -> None:
    """Parses gin files and bindings, then fails at once, naming them, if required macros are unset."""
    for path in [*gin_search_paths, GIN_ROOT]:
        gin.add_config_file_search_path(path)
    if not gin_files:
        raise ConfigError("No --gin_file given: e.g. --gin_file=gin/tiny_cpu.gin")
    gin_files = [resolve_gin_file(f, gin_search_paths) for f in gin_files]
    for binding in gin_bindings:
        check_binding_syntax(binding)
    try:
        gin.parse_config_files_and_bindings(gin_files, gin_bindings, skip_unknown=skip_unknown, finalize_config=False)
    except (ValueError, KeyError, ImportError, SyntaxError, OSError) as error:  # KeyError: an ambiguous selector
        raise ConfigError(explain_gin_error(error)) from None
    missing = missing_required_macros()
    if missing:
        raise ConfigError(
            "Required gin macro(s) not set: "
            + ", ".join(missing)
            + ". Set each with --gin.NAME=VALUE, e.g. "
            + " ".join(f"--gin.{name}=..." for name in missing)
        )
    check_command_line_macros(gin_bindings)
    if finalize_config:
        gin.finalize()


def summarize_gin_config(model_dir: str, summary_writer=None, step: int = 0) -> None:
    """Writes the operative gin config to `model_dir/config.gin` and, as text, to TensorBoard."""
    if jax.process_index() != 0:
        return
    config_str = gin.config_str()
    os.makedirs(model_dir, exist_ok=True)
    with open(os.path.join(model_dir, "config.gin"), "w") as f:
        f.write(config_str)
    if summary_writer is not None:
        summary_writer.write_texts(step, {"config": gin.markdown(config_str)})
        summary_writer.flush()


def configurable_main(fn: Callable) -> Callable[[Sequence[str]], None]:
    """An absl main that parses the gin flags and calls `fn` configured by gin (eval, infer)."""

    def main(argv: Sequence[str]) -> None:
        from absl import flags

        from simvlm_jax.cli import errors, startup

        del argv
        flag_values = flags.FLAGS
        verbosity = flag_values.verbosity if flag_values["verbosity"].present else 0
        if not flag_values["verbosity"].present:
            logging.set_verbosity(logging.WARNING)
            startup.drop_known_library_noise()
        configured = gin.configurable(fn)

        def configure_and_run():
            parse_gin_flags(flag_values.gin_search_paths, flag_values.gin_file, flag_values.gin_bindings)
            configured()

        errors.run_reporting_failures(configure_and_run, fn.__name__, verbosity)

    return main


def run(main: Callable[[Sequence[str]], None], argv: Optional[Sequence[str]] = None) -> None:
    """absl's app.run after rewriting `--gin.X=Y` flags."""
    import sys

    argv = rewrite_gin_args(list(argv if argv is not None else sys.argv))
    app.run(main, argv=argv, flags_parser=_parse_flags)


def _parse_flags(argv):
    from absl import flags

    return flags.FLAGS(argv)


__all__ = ["rewrite_gin_args", "parse_gin_flags", "summarize_gin_config", "missing_required_macros", "run", "logging"]
