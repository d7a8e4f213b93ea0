"""The ablation runner's bookkeeping: which overrides reach fine-tuning, and the table it writes."""

from benchmarks import ablations


def test_every_row_is_a_gin_override_and_fine_tuning_keeps_only_the_network_ones():
    for name, (what, overrides) in ablations.ROWS.items():
        assert what and all(o.startswith("--gin.") for o in overrides), name
    network = [o for o in ablations.ROWS["span_corruption"][1] if o.startswith(ablations._CONFIG)]
    assert network == ["--gin.network.SimVLMConfig.vocab_size=2100"]  # the mixture stays with pretraining
    assert ablations.ROWS["decoder_only"][1] == ["--gin.network.SimVLMConfig.decoder_only=True"]


def test_the_table_averages_seeds_and_marks_missing_figures():
    results = [
        {"row": "default", "seed": 0, "cider_validation": 10.0, "cider_heldout": 5.0, "exact_validation": 1.0},
        {"row": "default", "seed": 1, "cider_validation": 14.0, "cider_heldout": 7.0, "exact_validation": 3.0,
         "easy_vqa_accuracy": 80.0},
        {"row": "no_pretraining", "seed": 0, "easy_vqa_accuracy": 50.0},
    ]  # fmt: skip
    lines = ablations.table(results).splitlines()
    default = next(line for line in lines if line.startswith("| `default`"))
    assert "| 2 | 12.0 ± 2.8 (10.0, 14.0) | 6.0 ± 1.4 (5.0, 7.0) | 2.0 ± 1.4 (1.0, 3.0) | 80.0 (80.0) |" in default
    scratch = next(line for line in lines if line.startswith("| `no_pretraining`"))
    assert scratch.endswith("| 1 | n/a | n/a | n/a | 50.0 (50.0) |")
    assert not any(line.startswith("| `plain_lm`") for line in lines)  # rows without results are left out
