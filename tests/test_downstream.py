"""easy-VQA (builder, task, metric), the fine-tuning schedule offset, and the curves picture."""

import numpy as np
import pytest


@pytest.fixture(scope="module")
def easy_vqa_task(embedded_data_dir):
    import seqio

    import simvlm_jax.tasks  # noqa: F401

    return seqio.get_mixture_or_task("easy_vqa")


def test_easy_vqa_builder_holds_the_packaged_benchmark(easy_vqa_task):
    import PIL.Image
    import tensorflow_datasets as tfds

    from simvlm_jax.data import embedded
    from simvlm_jax.tasks import easy_vqa

    assert easy_vqa_task.num_input_examples("train") == 38575
    assert easy_vqa_task.num_input_examples("test") == 9673
    builder = tfds.builder("easy_vqa", data_dir=embedded.tfds_data_dir())
    questions = easy_vqa.read_split("test")
    for record in tfds.as_numpy(builder.as_dataset(split="test[:5]")):  # TFDS stores them shuffled by key
        question, answer, image_id = questions[int(record["question_id"])]
        assert (record["question"].decode(), record["answer"].decode(), int(record["image_id"])) == (
            question,
            answer,
            image_id,
        )
        with PIL.Image.open(easy_vqa.package_data_dir() / "test" / "images" / f"{image_id}.png") as png:
            np.testing.assert_array_equal(record["image"], np.asarray(png.convert("RGB")))
    assert sorted(easy_vqa.answer_vocabulary()) == sorted(
        [
            "circle",
            "rectangle",
            "triangle",
            "yes",
            "no",
            "red",
            "green",
            "blue",
            "black",
            "gray",
            "teal",
            "brown",
            "yellow",
        ]
    )


def test_easy_vqa_examples_put_the_question_in_the_encoder(easy_vqa_task):
    lengths = {"inputs": 16, "targets": 4, "image": 64}
    dataset = easy_vqa_task.get_dataset(lengths, split="test", shuffle=False)
    vocabulary = easy_vqa_task.output_features["targets"].vocabulary
    eos = vocabulary.eos_id
    for ex in dataset.take(20).as_numpy_iterator():
        assert vocabulary.decode(ex["inputs"].tolist()) == ex["inputs_pretokenized"].decode()  # no EOS in the prefix
        assert (
            ex["targets"][-1] == eos
            and vocabulary.decode(ex["targets"][:-1].tolist()) == ex["targets_pretokenized"].decode()
        )
        assert ex["image"].shape == (64, 64, 3) and ex["image_mask"].tolist() == [1.0]
        assert [a.decode() for a in ex["answers"]] == [ex["targets_pretokenized"].decode()]


def test_easy_vqa_is_scored_with_vqa_accuracy(easy_vqa_task):
    from simvlm_jax.data import question_answering

    example = {"answers": np.array([b"teal"])}
    target = question_answering.vqa_answers_postprocessor("teal", example=example, is_target=True)
    assert target == ["teal"]
    assert question_answering.vqa_answers_postprocessor("teal", example=example, is_target=False) == "teal"
    (metric_fn,) = easy_vqa_task.metric_fns
    assert metric_fn([["teal"], ["yes"], ["circle"], ["no"]], ["teal", "yes", "square", "no"]) == {"vqa_accuracy": 75.0}


def test_fine_tuning_schedule_starts_at_the_checkpoint_step():
    from simvlm_jax.training import schedules

    fresh = schedules.warmup_linear_decay(1e-3, total_steps=600, warmup_fraction=0.1)
    shifted = schedules.warmup_linear_decay(1e-3, total_steps=1800, warmup_fraction=0.1, start_step=1200)
    for step in (0, 30, 60, 61, 300, 599, 600):
        assert float(shifted(1200 + step)) == pytest.approx(float(fresh(step)), abs=1e-12)
    assert float(shifted(1260)) == pytest.approx(1e-3)  # the peak, 10% into the fine-tuning steps
    with pytest.raises(ValueError, match="start_step"):
        schedules.warmup_linear_decay(1e-3, total_steps=1200, start_step=1200)


def test_curves_png_shows_what_the_summaries_hold(tmp_path):
    from clu import metric_writers

    from simvlm_jax.training import curves

    model_dir = str(tmp_path)
    train = metric_writers.create_default_writer(str(tmp_path / "train"), asynchronous=False)
    evals = metric_writers.create_default_writer(str(tmp_path / "training_eval" / "task_a"), asynchronous=False)
    infer = metric_writers.create_default_writer(str(tmp_path / "inference_eval" / "task_a"), asynchronous=False)
    for step in (10, 20, 30):
        train.write_scalars(step, {"loss": 5.0 / step, "accuracy": step / 40})
        evals.write_scalars(step, {"loss": 6.0 / step, "accuracy": step / 50})
        infer.write_scalars(step, {"eval/cider": float(step)})
    for writer in (train, evals, infer):
        writer.flush()
    runs = curves.collect(model_dir)
    assert [v for _, v in runs["train"]["loss"]] == pytest.approx([0.5, 0.25, 5.0 / 30])
    assert runs["inference_eval/task_a"]["eval/cider"] == [(10, 10.0), (20, 20.0), (30, 30.0)]
    path = curves.plot(model_dir)
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert curves.plot(str(tmp_path / "empty")) is None
