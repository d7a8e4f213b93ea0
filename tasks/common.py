"""Building blocks for SimVLM tasks: output features and the two preprocessing pipelines."""

from __future__ import annotations

import functools
from typing import Optional

import seqio

from simvlm_jax.data import data_dirs, preprocessors, question_answering, span_corruption

# The PrefixLM split's defaults (the paper does not give its distribution; see docs/data.md).
DEFAULT_SPLIT = dict(min_prefix_tokens=0, max_prefix_tokens=None, min_target_tokens=1)


def output_features(vocabulary: seqio.Vocabulary) -> dict[str, seqio.Feature]:
    """Every SimVLM task has these four features, so image-text and text-only tasks mix."""
    return {
        "inputs": seqio.Feature(vocabulary, add_eos=False),
        "targets": seqio.Feature(vocabulary, add_eos=True),
        "image": seqio.ContinuousFeature(dtype=preprocessors.tf.float32, rank=3),
        "image_mask": seqio.ContinuousFeature(dtype=preprocessors.tf.float32, rank=1),
    }


OBJECTIVES = ("prefix_lm", "span_corruption")


def _objective_step(objective: str, split_kwargs: dict):
    """The preprocessor that turns `text_tokens` into `inputs` / `targets` for `objective`."""
    if objective == "span_corruption":
        return span_corruption.span_corruption
    if objective != "prefix_lm":
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    return functools.partial(preprocessors.prefix_lm_split, **{**DEFAULT_SPLIT, **split_kwargs})


def image_text_preprocessors(
    image_key: str = "image",
    text_key: str = "text",
    prompt: Optional[str] = None,
    id_key: Optional[str] = None,
    objective: str = "prefix_lm",
    **split_kwargs,
) -> list:
    """Image-text pairs -> PrefixLM examples (or prompted captioning examples when `prompt` is set; or
    T5 span corruption of the caption with `objective='span_corruption'`, the ablation).
    `id_key` names a record id to keep as `example_id` (shown in predictions)."""
    steps = [
        functools.partial(preprocessors.rekey_image_text, image_key=image_key, text_key=text_key, id_key=id_key),
        preprocessors.check_text,
        preprocessors.decode_image,
        preprocessors.resize_and_normalize_image,
        preprocessors.tokenize_text,
    ]
    if prompt is not None:
        steps.append(functools.partial(preprocessors.captioning_prompt, prompt=prompt))
    else:
        steps.append(_objective_step(objective, split_kwargs))
    steps.append(seqio.preprocessors.append_eos_after_trim)
    return steps


def text_only_preprocessors(
    text_key: str = "text", id_key: Optional[str] = None, objective: str = "prefix_lm", **split_kwargs
) -> list:
    """Documents -> PrefixLM examples with a blank, masked-out image; a long document is split in a random
    window (`prefix_lm_split(random_window=True)`). `objective='span_corruption'`: T5's objective instead."""
    return [
        functools.partial(preprocessors.rekey_text, text_key=text_key, id_key=id_key),
        preprocessors.check_text,
        preprocessors.add_blank_image,
        preprocessors.tokenize_text,
        _objective_step(objective, {"random_window": True, **split_kwargs}),
        seqio.preprocessors.append_eos_after_trim,
    ]


def add_task(name: str, source: seqio.DataSource, vocabulary: seqio.Vocabulary, steps: list, **kwargs) -> seqio.Task:
    """Registers (replacing any task of the same name) and returns a task. The bad-record checks learn the
    task's name, for their message when its source holds no good record."""
    named = (preprocessors.check_text, preprocessors.decode_image)
    steps = [functools.partial(step, task=name) if step in named else step for step in steps]
    seqio.TaskRegistry.remove(name)
    return seqio.TaskRegistry.add(
        name, source=source, output_features=output_features(vocabulary), preprocessors=steps, **kwargs
    )


def add_mixture(name: str, tasks_and_rates: list[tuple[str, float]], **kwargs) -> seqio.Mixture:
    seqio.MixtureRegistry.remove(name)
    return seqio.MixtureRegistry.add(name, tasks_and_rates, **kwargs)


def vqa_preprocessors(**rekey_kwargs) -> list:
    """VQA records -> question in the encoder, answer as the target (see data/question_answering.py)."""
    return [
        functools.partial(question_answering.rekey_vqa, **rekey_kwargs),
        preprocessors.decode_image,
        preprocessors.resize_and_normalize_image,
        question_answering.tokenize_question_answer,
        seqio.preprocessors.append_eos_after_trim,
    ]


def rekeyed_image_text_steps(rekey) -> list:
    """rekey -> the image in the encoder, the rekeyed `inputs` after it, `targets` generated."""
    return [
        rekey,
        preprocessors.decode_image,
        preprocessors.resize_and_normalize_image,
        question_answering.tokenize_question_answer,
        seqio.preprocessors.append_eos_after_trim,
    ]


class PreparedTfdsSource(seqio.TfdsDataSource):
    """A TFDS source over one of the package's own builders; the data is generated on first read.

    `tfds_name` is "<builder name>:<version>"; the builder class is looked up by that name (the module that
    defines it, the task's own, has registered it), and written to `data_dirs.tfds_data_dir()`
    ($SIMVLM_DATA_DIR/tfds).
    """

    def __init__(self, tfds_name: str, splits):
        super().__init__(tfds_name, tfds_data_dir=data_dirs.tfds_data_dir(), splits=splits)
        self._builder_name = tfds_name.split(":")[0]

    def prepare(self):
        """Generates (or converts) the dataset unless it is prepared; a FileNotFoundError names what is missing."""
        import tensorflow_datasets as tfds

        data_dirs.prepare_builder(tfds.builder_cls(self._builder_name))

    def get_dataset(self, *args, **kwargs):
        self.prepare()
        return super().get_dataset(*args, **kwargs)

    def list_shards(self, split):
        self.prepare()
        return super().list_shards(split)

    def num_input_examples(self, split):
        self.prepare()
        return super().num_input_examples(split)
