"""The `memstudy` command: argument parsing only; each command is a thin call into the packages.

Bad input of any kind (a flag, a spec field, a size over the budget) ends with one line
`error: ...` on stderr and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, NoReturn

USAGE_EXIT = 2
FAILURE_EXIT = 1


class UsageError(Exception):
    """Bad input: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"error: {message}\n")
        raise SystemExit(USAGE_EXIT)


def _int_at_least(minimum: int):
    """An argparse type: an integer no smaller than `minimum`, else a one-line error naming the flag."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


def _add_model_flags(parser: argparse.ArgumentParser, modes: tuple[str, ...]) -> None:
    from .study.fields import CHOICES

    group = parser.add_argument_group("model and step")
    group.add_argument("--depth", type=_positive_int, default=2, help="hidden Linear+activation layers (2)")
    group.add_argument("--width", type=_positive_int, default=256, help="hidden width (256)")
    group.add_argument("--in-features", type=_positive_int, default=None, help="input features (default: width)")
    group.add_argument("--classes", type=_positive_int, default=10, help="output classes (10)")
    group.add_argument("--batch", type=_positive_int, default=64, help="batch size (64)")
    group.add_argument("--activation", choices=CHOICES["activation"], default="relu")
    group.add_argument("--dtype", choices=CHOICES["dtype"], default="float32")
    group.add_argument("--bias", action=argparse.BooleanOptionalAction, default=True, help="Linear biases (on)")
    group.add_argument("--mode", choices=modes, default="train")
    group.add_argument("--optimizer", choices=CHOICES["optimizer"], default="sgd")
    group.add_argument("--seed", type=_non_negative_int, default=0)


def _add_memory_flags(parser: argparse.ArgumentParser) -> None:
    """What buys the memory back: checkpointing and the saved-tensor policy (run and predict)."""
    from .study.fields import CHOICES

    group = parser.add_argument_group("what buys memory back")
    group.add_argument("--checkpoint", default="none", metavar="{none,sqrt,every:K}",
                       help="gradient checkpointing: hold only each segment's input and recompute the segment in "
                            "backward; sqrt = segments of ceil(sqrt(depth)) layers, every:K = of K layers (none)")
    group.add_argument("--policy", choices=CHOICES["policy"], default="minimal",
                       help="saved tensors: minimal = what backward needs; all = every intermediate, as the textbook "
                            "stores them; half = what backward needs, stored as float16 (minimal)")


def _config(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "depth": args.depth, "width": args.width, "in_features": args.in_features,
        "out_features": args.classes, "batch_size": args.batch, "activation": args.activation,
        "bias": args.bias, "dtype": args.dtype, "optimizer": args.optimizer,
        "checkpoint": getattr(args, "checkpoint", "none"), "policy": getattr(args, "policy", "minimal"),
        "seed": args.seed,
    }


def _budget(text: str) -> int:
    from .units import parse_bytes

    try:
        return parse_bytes(text, "--budget")
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="memstudy", description="Why training needs more memory than inference, measured.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    run = commands.add_parser("run", help="measure one training or inference step, four probes and the prediction")
    _add_model_flags(run, ("train", "inference", "both"))
    _add_memory_flags(run)
    run.add_argument("--repeats", type=_positive_int, default=1, help="measured steps (1)")
    run.add_argument("--budget", default="75%", help="refuse sizes whose predicted peak exceeds this (75%% of "
                                                     "available memory; or e.g. 4GiB)")
    run.add_argument("--json", action="store_true", help="one JSON row per repeat, one per line")
    run.add_argument("--by-layer", action="store_true", help="bytes held for backward, parameters and "
                                                              "gradients per layer")
    run.add_argument("--timeline", metavar="FILE.csv", help="write the ledger's event timeline of the first step")
    run.add_argument("--html", metavar="FILE.html", help="write an interactive page of the run: the first mode's "
                                                          "step timeline (hover a buffer) and the tables; opens "
                                                          "offline")
    run.set_defaults(handler=_cmd_run)

    predict = commands.add_parser("predict", help="predict a step's memory without running it")
    _add_model_flags(predict, ("train", "inference"))
    _add_memory_flags(predict)
    predict.add_argument("--json", action="store_true", help="print the prediction as JSON")
    predict.set_defaults(handler=_cmd_predict)

    sweep = commands.add_parser("sweep", help="run a study's grid, each cell in a fresh process, into runs.csv")
    sweep.add_argument("spec", metavar="SPEC.toml")
    _add_sweep_flags(sweep, out_default=None)
    sweep.set_defaults(handler=_cmd_sweep)

    report = commands.add_parser("report", help="summary.csv, report.md and plots from a sweep's folder")
    report.add_argument("results_dir", metavar="DIR")
    report.add_argument("--no-figures", action="store_true", help="skip the PNG plots")
    report.set_defaults(handler=_cmd_report)

    study = commands.add_parser("study", help="sweep experiments/default.toml into results/default, then report "
                                              "(--all: every experiments/*.toml into results/<name>)")
    study.add_argument("--spec", default=None, metavar="SPEC.toml", help=f"({DEFAULT_SPEC})")
    study.add_argument("--all", action="store_true", help=f"every {STUDIES_DIR}/*.toml, each into results/<name>")
    _add_sweep_flags(study, out_default=None)
    study.set_defaults(handler=_cmd_study)

    graph = commands.add_parser("graph", help="the forward pass's computational graph and saved buffers as DOT")
    _add_model_flags(graph, ("train",))
    graph.add_argument("--out", default="graph.dot", metavar="FILE", help="DOT file (graph.dot); a PNG "
                                                                         "is written beside it when `dot` exists")
    graph.set_defaults(handler=_cmd_graph)
    return parser


DEFAULT_SPEC = "experiments/default.toml"
STUDIES_DIR = "experiments"


def _add_sweep_flags(parser: argparse.ArgumentParser, out_default: str | None) -> None:
    parser.add_argument("--out", default=out_default, metavar="DIR", help="results folder (results/<study name>)")
    parser.add_argument("--jobs", type=_positive_int, default=None, help="cells at once (the spec's [run] jobs)")
    parser.add_argument("--fresh", action="store_true", help="discard earlier results in DIR and start over")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _sweep(spec_path: str, args: argparse.Namespace) -> str:
    import os

    from .study.spec import SpecError, load_spec
    from .study.sweep import SweepError, run_sweep

    if not os.path.isfile(spec_path):
        raise UsageError(f"spec file {spec_path} not found")
    try:
        spec = load_spec(spec_path)
        out = args.out or os.path.join("results", spec.name)
        outcome = run_sweep(spec, out, jobs=args.jobs, fresh=args.fresh, progress=not args.no_progress)
    except (SpecError, SweepError) as exc:
        raise UsageError(str(exc)) from None
    for warning in outcome.warnings:
        sys.stderr.write(f"warning: {warning}\n")
    print(f"{spec.name}: {outcome.cells} cells ({outcome.resumed} already done): {outcome.ok} ok, "
          f"{outcome.skipped} skipped, {outcome.failed} failed -> {outcome.runs_csv}")
    return out


def _report(results_dir: str, figures: bool = True) -> None:
    from .study.report import ReportError, write_report
    from .study.webpage import PageError

    try:
        written = write_report(results_dir, figures=figures)
    except (ReportError, PageError) as exc:
        raise UsageError(str(exc)) from None
    print(f"report: {len(written)} files in {results_dir} ({', '.join(p.name for p in written)})")


def _cmd_sweep(args: argparse.Namespace) -> int:
    _sweep(args.spec, args)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    _report(args.results_dir, figures=not args.no_figures)
    return 0


def _cmd_study(args: argparse.Namespace) -> int:
    if not args.all:
        _report(_sweep(args.spec or DEFAULT_SPEC, args))
        return 0
    import glob
    import os

    if args.spec or args.out:
        raise UsageError("--all runs every experiments/*.toml into results/<name>: it takes no --spec or --out")
    specs = sorted(glob.glob(os.path.join(STUDIES_DIR, "*.toml")))
    if not specs:
        raise UsageError(f"no {STUDIES_DIR}/*.toml here (run from the project's folder)")
    for spec_path in specs:
        _report(_sweep(spec_path, args))
    return 0


def _cmd_graph(args: argparse.Namespace) -> int:
    from .config import normalize
    from .study.graphviz import GraphError, write_graph

    try:
        written = write_graph(normalize({**_config(args), "mode": "train"}), args.out)
    except GraphError as exc:
        raise UsageError(str(exc)) from None
    print("graph: " + ", ".join(str(p) for p in written))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    import tempfile

    from .study.single import run_modes, write_run_html
    from .study.tables import run_report
    from .study.webpage import PageError, check_output_path

    modes = ["train", "inference"] if args.mode == "both" else [args.mode]
    if args.html:  # refuse a bad path before measuring anything
        try:
            check_output_path(args.html, "--html")
        except PageError as exc:
            raise UsageError(str(exc)) from None
    with tempfile.TemporaryDirectory(prefix="memstudy-run-") as scratch:
        # the page draws the first step's timeline: measure one even when --timeline was not asked for
        timeline = args.timeline or (f"{scratch}/timeline.csv" if args.html else None)
        results = run_modes(_config(args), modes, args.repeats, _budget(args.budget), timeline, args.by_layer)
        if args.html:
            write_run_html(args.html, results, timeline, args.by_layer)
    if args.json:
        for rows in results.values():
            for row in rows:
                print(json.dumps(row))
    else:
        print(run_report(results, by_layer=args.by_layer))
        if args.html:
            print(f"\nhtml: {args.html}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from .config import normalize
    from .memory.predict import predict
    from .study.tables import predict_report

    config = normalize({**_config(args), "mode": args.mode})
    prediction = predict(config)
    if args.json:
        print(json.dumps({**config, **prediction}))
    else:
        print(predict_report(config, prediction))
    return 0


def main(argv: list[str] | None = None) -> int:
    from .config import ConfigError

    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (UsageError, ConfigError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return USAGE_EXIT
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        return 130
    except Exception as exc:  # a failure of the tool, not of the input: still one line, exit 1
        sys.stderr.write(f"error: {type(exc).__name__}: {exc}\n")
        return FAILURE_EXIT


if __name__ == "__main__":
    raise SystemExit(main())
