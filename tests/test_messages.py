"""What the command says: help texts that describe what a flag does here, messages that say how to go on, sizes
in a unit a reader can take in (issue 21, item 12). Run in-process (`cli.main`) where a subprocess adds nothing."""
from __future__ import annotations

import json

import pytest

from memstudy import cli
from memstudy.units import format_bytes


def help_text(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*args, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def flag_help(text: str, flag: str) -> str:
    """The help entry of `flag` (its line and the indented lines that continue it), spaces folded."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(flag + " ") or line.strip() == flag)
    entry = [lines[start]]
    for line in lines[start + 1:]:
        if not line.startswith(" " * 10) or line.strip().startswith("--"):
            break
        entry.append(line)
    return " ".join(" ".join(entry).split())


def one_error_line(capsys, args: list[str]) -> str:
    try:
        status = cli.main(args)
    except SystemExit as exit_info:  # argparse's own errors leave through the parser
        status = exit_info.code
    assert status == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    return lines[0]


def test_graph_mode_help_describes_the_graph_it_draws(capsys):
    entry = flag_help(help_text(capsys, "graph"), "--mode")
    assert "{train}" in entry
    assert "inference" not in entry.split("}", 1)[1].replace("(inference records none)", ""), entry


@pytest.mark.parametrize("model", ["mlp", "seed", "cnn"])
def test_classes_is_one_name_flag_and_metavar(capsys, model):
    text = help_text(capsys, "run", "--model", model)
    entry = flag_help(text, "--classes")
    assert entry.startswith("--classes CLASSES"), entry
    assert "OUT_FEATURES" not in text


def test_checkpoint_help_explains_the_familys_own_strategies(capsys):
    entry = flag_help(help_text(capsys, "run", "--model", "gpt"), "--checkpoint")
    assert "selective" in entry.split("}", 1)[1], entry  # explained after the choices, not only listed
    assert "attention" in entry
    assert "selective" not in flag_help(help_text(capsys, "run"), "--checkpoint")  # the MLP has no such strategy


def test_report_help_has_a_description(capsys):
    text = help_text(capsys, "report")
    body = text.split("positional arguments", 1)[0]
    assert "runs.csv" in body and "report.md" in body and "report.html" in body, text


@pytest.mark.parametrize("flag, value, model", [("--heads", "2", "gpt"), ("--image-size", "32", "cnn"),
                                                 ("--lam", "0.1", "seed")])
def test_a_flag_of_another_family_says_which_model_to_add(capsys, flag, value, model):
    line = one_error_line(capsys, ["predict", flag, value])
    assert f"{flag} is a flag of --model {model}" in line and f"add --model {model}" in line, line


def test_an_unknown_flag_is_still_called_unknown(capsys):
    line = one_error_line(capsys, ["predict", "--frobnicate", "1"])
    assert "unrecognized arguments: --frobnicate" in line


def test_local_cluster_without_a_number_is_refused_before_anything_is_read_or_made(capsys, tmp_path):
    out = tmp_path / "never"
    line = one_error_line(capsys, ["sweep", str(tmp_path / "no-such-spec.toml"), "--out", str(out),
                                   "--cluster", "local:abc"])
    assert "--cluster" in line and "local:abc" in line and "N >= 1" in line, line
    assert not out.exists()
    spec = tmp_path / "tiny.toml"
    spec.write_text("[grid]\ndepth = 1\n")
    line = one_error_line(capsys, ["study", "--spec", str(spec), "--out", str(out), "--cluster", "local:0"])
    assert "local:0" in line and not out.exists()


@pytest.mark.parametrize("nbytes, text", [
    (0, "0 B"), (1023, "1023 B"), (1536, "1.50 KiB"), (3 * 2 ** 30, "3.00 GiB"), (5 * 2 ** 40, "5.00 TiB"),
    (2.5 * 2 ** 50, "2.50 PiB"), (2 ** 60, "1.00 EiB"), (23841857910156.25 * 2 ** 30, "21.68 ZiB"),
    (2 ** 80, "1.00 YiB"), (3 * 2 ** 90, "3,072.00 YiB"), (-5 * 2 ** 40, "-5.00 TiB"), (None, "—"),
])
def test_sizes_print_in_the_largest_binary_unit_that_fits(nbytes, text):
    assert format_bytes(nbytes) == text


def test_predict_prints_the_parameter_counts_beside_the_bytes(capsys):
    # MLP depth 2, width 8, 8 inputs, 10 classes, biases: 2·(8·8 + 8) + (8·10 + 10) = 234 parameters
    args = ["predict", "--depth", "2", "--width", "8", "--batch", "4"]
    assert cli.main(args) == 0
    table = capsys.readouterr().out
    line = next(line for line in table.splitlines() if line.startswith("parameters "))
    assert "936 B (234 parameters, 234 trainable)" in line, line
    assert cli.main(args + ["--json"]) == 0
    prediction = json.loads(capsys.readouterr().out)
    assert (prediction["parameter_count"], prediction["trainable_parameter_count"]) == (234, 234)
    assert prediction["parameter_bytes"] == 234 * 4


def test_gpt2_small_has_the_published_parameter_count():
    """124,439,808 with a 1024-position table and the head tied to the token embedding (REFERENCES.md)."""
    from memstudy.measure.predict import predict

    prediction = predict(dict(model="gpt", depth=12, width=768, heads=12, seq_len=1024, vocab=50257, batch_size=1,
                              mode="inference"))
    assert prediction["parameter_count"] == prediction["trainable_parameter_count"] == 124_439_808
    assert prediction["parameter_bytes"] == 4 * 124_439_808


def test_predict_counts_a_frozen_parameter_as_not_trainable():
    """A user family with a frozen layer: the ledger's counts split parameters from trainable ones."""
    from memstudy.measure.workload import Workload
    from memstudy.nn.models.registry import normalize

    work = Workload(normalize(dict(depth=2, width=8, batch_size=4)))
    frozen = work.model.linears[0].parameters()
    for p in frozen:
        p.requires_grad = False
    account = work.ledger_step()
    total = sum(p.data.size for p in work.model.parameters())
    assert account.parameter_count == total == 234
    assert account.trainable_parameter_count == total - sum(p.data.size for p in frozen) == 234 - 72
