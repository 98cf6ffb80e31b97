"""The `memstudy` command: argument parsing only; each command is a thin call into the packages.

Bad input of any kind (a flag, a spec field, a size over the budget, a path that cannot be written, a
results folder another process is writing into) ends with one line `error: ...` on stderr and exit
status 2, never a traceback. `sweep` and `study` exit 1 when a cell of the spec failed (EXIT_HELP).
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, NoReturn

from .nn.models.registry import DEFAULT_FAMILY

USAGE_EXIT = 2
FAILURE_EXIT = 1
EXIT_HELP = ("exit status: 0 when every cell ended ok or was skipped by the budget; 1 when a cell of the spec "
             "failed (its rows say why; --retry-failed reruns it); 2 for bad input (the spec, a flag, a path, "
             "a folder another memstudy is writing into), with one line `error: ...`")


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


def _field_type(field: Any):
    """An argparse type for a registry field: numbers checked against the field's bounds, one-line errors."""
    def parse(text: str) -> Any:
        try:
            value = text if field.parse is not None else field.type(text)  # `check` parses it
        except ValueError:
            kind = "an integer" if field.type is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
        try:
            return field.check(value)
        except ValueError as exc:  # "depth must be at least 1, ..." -> argparse prefixes the flag itself
            message = str(exc)
            prefix = f"{field.name} "
            raise argparse.ArgumentTypeError(message[len(prefix):] if message.startswith(prefix) else message) from None

    return parse


HF_CONFIG_HELP = ("fill the model's fields from a Hugging Face config.json (llama: LlamaConfig, gpt: GPT2Config); "
                  "flags given explicitly override the file's values")


PRECISION_HELP = ("shorthand for --dtype/--autocast/--master-weights/--loss-scale, PyTorch Lightning's names: 64-true, "
                  "32-true, bf16-true, 16-true, bf16-mixed (autocast bfloat16), 16-mixed (autocast float16 and "
                  "loss scaling); and memstudy's bf16-master, 16-master (16-bit parameters, float32 master weights)")


def _add_model_flags(parser: argparse.ArgumentParser, family: Any, modes: tuple[str, ...],
                     defaults: dict[str, Any]) -> None:
    """`--model`, `--hf-config` and every field the family declares (shared fields first), read from the registry;
    `defaults` (the fields an --hf-config file gives) replace the fields' own defaults."""
    group = parser.add_argument_group(f"model and step (--model {family.name})")
    group.add_argument("--model", default=DEFAULT_FAMILY, metavar="NAME|FILE.py:Class",
                       help=f"model family: a built-in name or your own file's Family class ({DEFAULT_FAMILY}); "
                            "that file is Python memstudy runs: name only files you trust")
    group.add_argument("--hf-config", metavar="CONFIG.json", help=HF_CONFIG_HELP)
    group.add_argument("--precision", metavar="NAME", help=PRECISION_HELP)
    for field in family.all_fields():
        value = defaults.get(field.name, field.default)
        default = f" ({value})" if value is not None else ""
        kwargs: dict[str, Any] = {"dest": field.name, "default": value, "help": field.help + default}
        if field.name == "mode":
            kwargs.update(choices=modes)
            if modes == ("train",):  # `graph`: what it draws, not what the other modes would do
                kwargs["help"] = "the step whose forward graph is drawn: train only (inference records none)"
        elif field.type is bool:
            kwargs.update(action=argparse.BooleanOptionalAction)
        elif field.choices is not None:
            kwargs.update(choices=field.choices)
        elif field.name == "checkpoint":
            kwargs.update(metavar="{" + ",".join(("none", "sqrt", *family.checkpoints, "every:K")) + "}")
        else:  # the metavar names the flag, not the row's column (--classes CLASSES, not OUT_FEATURES)
            kwargs.update(type=_field_type(field), metavar=field.cli_flag[2:].replace("-", "_").upper())
        group.add_argument(field.cli_flag, **kwargs)


def _config(args: argparse.Namespace, family: Any) -> dict[str, Any]:
    config = {"model": family.name}
    config.update({f.name: getattr(args, f.name) for f in family.all_fields() if f.name != "mode"})
    if args.precision is not None:  # the registry expands it into the precision fields (one-line errors there)
        config["precision"] = args.precision
    return config


def _flag_value(argv: list[str], flag: str) -> str | None:
    """The value of the last `flag VALUE` or `flag=VALUE` in argv, or None."""
    value = None
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
    return value


def _family_from_argv(argv: list[str]) -> tuple[Any, dict[str, Any]]:
    """The family `--model` names, or the one that reads `--hf-config`'s model_type, and the fields that file gives
    (flags depend on both, so they are read before the parser is built; the file's fields become the defaults, so
    that flags given explicitly override them)."""
    from .nn.models.registry import get_family

    name, hf_config = _flag_value(argv, "--model"), _flag_value(argv, "--hf-config")
    if hf_config is None:
        return get_family(name), {}
    from .nn.models.hf_config import hf_config_fields

    return hf_config_fields(hf_config, name)


def _cluster_address(text: str) -> str:
    """An argparse type for --cluster: `local:N` is checked here, before any spec or folder is touched; a
    scheduler's address is checked when the sweep connects (run/executors/dask.py)."""
    from .run.executors.dask import ClusterError, parse_local

    try:
        parse_local(text)
    except ClusterError:
        raise argparse.ArgumentTypeError(f"local:N needs a number of workers N >= 1, got {text!r}") from None
    return text


def _other_familys_flag(flag: str, family: Any) -> str | None:
    """`--heads is a flag of --model gpt` when `flag` is not `family`'s but a built-in family declares it."""
    from .nn.models.registry import builtin_names, get_family

    owners = [name for name in builtin_names() if name != family.name
              and any(f.cli_flag == flag for f in get_family(name).all_fields())]
    if not owners:
        return None
    models = " or ".join(f"--model {name}" for name in owners)
    return (f"{flag} is a flag of {models}, not of --model {family.name}: add {models.split(' or ')[0]} "
            f"(`memstudy COMMAND --model NAME --help` lists a family's flags)")


def _budget(text: str) -> int:
    from .units import parse_bytes

    try:
        return parse_bytes(text, "--budget")
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _max_seconds(value: float | None) -> float:
    """--max-seconds: how long a prediction may be estimated to take (memory.predict.PREDICT_MAX_SECONDS)."""
    from .measure.predict import PREDICT_MAX_SECONDS

    if value is None:
        return PREDICT_MAX_SECONDS
    if not value > 0:  # NaN too
        raise UsageError(f"--max-seconds must be a positive number of seconds, got {value:g}")
    return value


def build_parser(family: Any = None, defaults: dict[str, Any] | None = None) -> argparse.ArgumentParser:
    """The parser; model flags are those of `family` (default: the registry's default family), with `defaults`
    (an --hf-config file's fields) in place of the fields' own."""
    from .nn.models.registry import get_family
    from .run.study import DEFAULT_SPEC, RESULTS_DIR, STUDIES_DIR

    defaults = defaults or {}
    family = family or get_family(None)
    parser = _Parser(prog="memstudy", description="Why training needs more memory than inference, measured.",
                     allow_abbrev=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.add_parser = _no_abbrev(commands.add_parser)
    commands.required = True

    run = commands.add_parser("run", help="measure one training or inference step, four probes and the prediction")
    _add_model_flags(run, family, ("train", "inference", "generate", "both"), defaults)
    run.add_argument("--repeats", type=_positive_int, default=1, help="measured steps (1)")
    run.add_argument("--budget", default="75%", help="refuse sizes whose predicted peak exceeds this (75%% of "
                                                     "available memory; or e.g. 4GiB)")
    run.add_argument("--max-seconds", type=float, default=None, metavar="S",
                     help="refuse a size whose prediction (the budget check) is estimated to take longer (10)")
    run.add_argument("--json", action="store_true", help="JSON Lines: one JSON object (row) per repeat per line")
    run.add_argument("--by-layer", action="store_true", help="bytes held for backward, parameters and "
                                                              "gradients per layer")
    run.add_argument("--timeline", metavar="FILE.csv", help="write the ledger's event timeline of the first step "
                                                           "(its folder must exist)")
    run.add_argument("--html", metavar="FILE.html", help="write an interactive page of the run: the first mode's "
                                                          "step timeline (hover a buffer) and the tables; opens "
                                                          "offline")
    run.set_defaults(handler=_cmd_run)

    predict = commands.add_parser("predict", help="predict a step's memory without running it")
    _add_model_flags(predict, family, ("train", "inference", "generate"), defaults)
    predict.add_argument("--json", action="store_true", help="print the prediction as JSON")
    predict.add_argument("--budget", default=None, help="refuse sizes whose predicted peak exceeds this, as run does "
                                                       "(e.g. 4GiB or 75%%; default: no limit)")
    predict.add_argument("--max-seconds", type=float, default=None, metavar="S",
                         help="refuse a prediction estimated to take longer (10; a family whose repeated blocks are "
                              "predicted once takes the same at any depth)")
    predict.add_argument("--no-progress", action="store_true", help="no progress bar")
    predict.set_defaults(handler=_cmd_predict)

    sweep = commands.add_parser("sweep", help="run a study's grid, each cell in a fresh process, into runs.csv",
                                epilog=EXIT_HELP)
    sweep.add_argument("spec", metavar="SPEC.toml")
    sweep.add_argument("--hf-config", metavar="CONFIG.json", help=HF_CONFIG_HELP.replace("flags", "grid keys")
                       + " (as hf_config in the spec's [grid], which this replaces)")
    _add_sweep_flags(sweep, out_default=None)
    sweep.set_defaults(handler=_cmd_sweep)

    report = commands.add_parser(
        "report", help="summary.csv, report.md and plots from a sweep's folder",
        description="Read DIR/runs.csv (and DIR/env.json, timeline.csv, layers.csv when there) and write "
                    "DIR/summary.csv (the median of each cell's repeats), DIR/report.md (the study's findings, "
                    "computed from the rows), DIR/report.html (the same with interactive charts; opens offline) "
                    "and the PNG plots. Holds DIR's lock while it writes.")
    report.add_argument("results_dir", metavar="DIR")
    report.add_argument("--no-figures", action="store_true", help="skip the PNG plots (and remove earlier ones)")
    report.set_defaults(handler=_cmd_report)

    study = commands.add_parser("study", help=f"sweep {DEFAULT_SPEC} into {RESULTS_DIR}/default, then report "
                                              f"(--all: every {STUDIES_DIR}/*.toml into {RESULTS_DIR}/<name>)",
                                epilog=EXIT_HELP)
    study.add_argument("--spec", default=None, metavar="SPEC.toml", help=f"({DEFAULT_SPEC})")
    study.add_argument("--all", action="store_true",
                       help=f"every {STUDIES_DIR}/*.toml, each into {RESULTS_DIR}/<name>")
    _add_sweep_flags(study, out_default=None)
    study.set_defaults(handler=_cmd_study)

    _add_plan_parser(commands)

    graph = commands.add_parser("graph", help="the forward pass's computational graph and saved buffers as DOT")
    _add_model_flags(graph, family, ("train",), defaults)
    graph.add_argument("--out", default="graph.dot", metavar="FILE", help="DOT file (graph.dot); a PNG "
                                                                         "is written beside it when `dot` exists")
    graph.add_argument("--budget", default="75%", help="refuse sizes whose predicted peak exceeds this (75%% of "
                                                       "available memory; or e.g. 4GiB)")
    graph.set_defaults(handler=_cmd_graph)
    return parser


def _list_of(kind: type):
    """An argparse type: comma-separated values of `kind` (int, str, or bool as on/off)."""
    def parse(text: str) -> tuple:
        items = tuple(part.strip() for part in text.split(",") if part.strip())
        if not items:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
        if kind is int:
            try:
                values = tuple(int(item) for item in items)
            except ValueError:
                raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {text!r}") from None
            if min(values) < 0:
                raise argparse.ArgumentTypeError(f"expected non-negative integers, got {text!r}")
            return values
        if kind is bool:
            table = {"on": True, "off": False, "yes": True, "no": False, "true": True, "false": False}
            if any(item.lower() not in table for item in items):
                raise argparse.ArgumentTypeError(f"expected on and/or off, got {text!r}")
            return tuple(table[item.lower()] for item in items)
        return items

    return parse


PLAN_VARIES = (  # flag, kind, what it varies (the plan's axes; an axis whose field the model lacks is refused)
    ("--precision", str, "Lightning precision names and memstudy's *-master (default bf16-mixed,bf16-master)"),
    ("--optimizer", str, "optimizers (default adam)"),
    ("--checkpoint", str, "checkpoint strategies (default none,selective,every:1)"),
    ("--attention", str, "attention implementations, when the model has the field (default flash)"),
    ("--lora-rank", int, "LoRA ranks, 0 = full fine-tuning (default 0)"),
    ("--tensor-parallel", int, "tensor-parallel sizes (default: the divisors of --devices)"),
    ("--pipeline-parallel", int, "pipeline stages (default 1: a pipeline only when asked, e.g. 1,2,4)"),
    ("--sequence-parallel", bool, "on and/or off (default both where tensor parallel > 1)"),
    ("--zero", int, "ZeRO stages (default 0,1,2,3 where data parallel > 1)"),
    ("--micro-batch", int, "micro-batch sizes (default 1,2,4,8; the microbatches are global batch / (micro-batch x "
                           "data parallel))"),
)


def _add_plan_parser(commands: Any) -> None:
    plan = commands.add_parser(
        "plan", help="which ways of training a model fit the machines, ranked by a stated cost model",
        description="Predicts every admissible combination of the choices below (each distinct rank graph once) "
                    "and ranks those whose largest rank peak fits the device memory minus the reserve.")
    plan.add_argument("--model", default=None, metavar="NAME|FILE.py:Class", help="model family (with --hf-config: "
                                                                                  "the family reading it)")
    plan.add_argument("--hf-config", metavar="CONFIG.json", help="the model's fields from a Hugging Face config.json")
    plan.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                      help="fix one of the model's fields (JSON value, e.g. --set lora_targets=\"all-linear\")")
    plan.add_argument("--seq-len", type=_positive_int, default=None, help="tokens per sequence")
    plan.add_argument("--global-batch", type=_positive_int, required=True, help="sequences per optimiser step")
    plan.add_argument("--devices", type=_positive_int, default=1, help="devices (1)")
    plan.add_argument("--device-memory", required=True, metavar="SIZE", help="memory of each device, e.g. 80GB")
    plan.add_argument("--devices-per-node", type=_positive_int, default=None, help="devices per node (the cost "
                                                                                  "model's link: NVLink within, "
                                                                                  "InfiniBand between)")
    plan.add_argument("--reserve", default=None, metavar="SIZE", help="memory kept back per device for what is not "
                                                                      "modelled (default 1 GiB + 5%% of the device)")
    for flag, kind, help_text in PLAN_VARIES:
        plan.add_argument(flag, type=_list_of(kind), default=None, metavar="A,B,...", help=help_text)
    plan.add_argument("--top", type=_non_negative_int, default=20, help="rows of the table (20; 0: all)")
    plan.add_argument("--json", action="store_true", help="JSON Lines: one object per predicted configuration")
    plan.add_argument("--no-progress", action="store_true", help="no progress bar")
    plan.add_argument("--jobs", type=_positive_int, default=None, help="processes predicting the configurations "
                      "(default: the cores this process may use; the plan is the same for any number)")
    plan.set_defaults(handler=_cmd_plan, plan_command=True)


def _cmd_plan(args: argparse.Namespace) -> int:
    from .plan.command import run_plan

    options = {flag[2:].replace("-", "_"): getattr(args, flag[2:].replace("-", "_")) for flag, _, _ in PLAN_VARIES}
    text = run_plan(model=args.model, hf_config=args.hf_config, sets=args.set, seq_len=args.seq_len,
                    global_batch=args.global_batch, devices=args.devices, device_memory=args.device_memory,
                    devices_per_node=args.devices_per_node, reserve=args.reserve, choices=options, top=args.top,
                    as_json=args.json, progress=not args.no_progress, argv=sys.argv[1:], jobs=args.jobs)
    print(text)
    return 0


def _no_abbrev(add_parser: Any) -> Any:
    def add(*args: Any, **kwargs: Any) -> argparse.ArgumentParser:
        return add_parser(*args, allow_abbrev=False, **kwargs)

    return add


def _add_sweep_flags(parser: argparse.ArgumentParser, out_default: str | None) -> None:
    parser.add_argument("--out", default=out_default, metavar="DIR", help="results folder (results/<study name>)")
    parser.add_argument("--jobs", type=_positive_int, default=None, help="cells at once (the spec's [run] jobs)")
    parser.add_argument("--cluster", metavar="ADDRESS|local:N", default=None, type=_cluster_address,
                        help="run the cells on a Dask cluster (tcp://host:8786 or tls://host:8786; workers started "
                             "with --nthreads 1 --resources memstudy-cell=1), or on N local Dask worker processes "
                             "(local:N); needs pip install 'memstudy[distributed]'. Whoever reaches a tcp:// "
                             "scheduler's port can run code on its workers: keep it on a private network, or use "
                             "tls:// with certificates in Dask's configuration (distributed.comm.tls.ca-file, "
                             ".client.cert, .client.key)")
    parser.add_argument("--fresh", action="store_true", help="discard earlier results in DIR and start over")
    parser.add_argument("--retry-failed", action="store_true", help="rerun the cells whose rows in DIR failed or "
                                                                    "timed out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _warn(message: str) -> None:
    sys.stderr.write(f"warning: {message}\n")


def _sweep_options(args: argparse.Namespace) -> dict[str, Any]:
    return dict(jobs=args.jobs, cluster=args.cluster, fresh=args.fresh, retry_failed=args.retry_failed,
                progress=not args.no_progress, warn=_warn)


def _report(results_dir: str, figures: bool = True) -> None:
    from .report.build import ReportError, write_report
    from .report.html import PageError

    try:
        written = write_report(results_dir, figures=figures, warn=_warn)
    except (ReportError, PageError) as exc:
        raise UsageError(str(exc)) from None
    print(f"report: {len(written)} files in {results_dir} ({', '.join(p.name for p in written)})")


def _cmd_sweep(args: argparse.Namespace) -> int:
    from .run.study import sweep_spec

    return sweep_spec(args.spec, args.out, hf_config=args.hf_config, **_sweep_options(args))[1]


def _cmd_report(args: argparse.Namespace) -> int:
    _report(args.results_dir, figures=not args.no_figures)
    return 0


def _cmd_study(args: argparse.Namespace) -> int:
    from .run.study import run_studies

    return run_studies(_report, every=args.all, spec=args.spec, out=args.out, **_sweep_options(args))


def _cmd_graph(args: argparse.Namespace) -> int:
    from .config import normalize
    from .run.results.folder import output_file
    from .report.graphviz import GraphError, write_graph
    from .run.single import check_budget

    out = output_file(args.out, "--out")
    config = normalize({**_config(args, args.family), "mode": "train"})
    check_budget(config, _budget(args.budget))
    try:
        written = write_graph(config, out)
    except GraphError as exc:
        raise UsageError(str(exc)) from None
    print("graph: " + ", ".join(str(p) for p in written))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    import tempfile

    from .run.results.folder import output_file
    from .report.html import PageError, check_output_path
    from .report.terminal import agreement_lines, run_report
    from .run.single import run_modes

    modes = ["train", "inference"] if args.mode == "both" else [args.mode]
    if args.html is not None:  # refuse a bad path before measuring anything
        output_file(args.html, "--html")
        try:
            check_output_path(args.html, "--html")
        except PageError as exc:
            raise UsageError(str(exc)) from None
    with tempfile.TemporaryDirectory(prefix="memstudy-run-") as scratch:
        # the page draws each step's timeline: measure them even when --timeline was not asked for
        timelines = {mode: f"{scratch}/{mode}.csv" for mode in modes} if args.html else {}
        timeline = args.timeline if args.timeline is not None else timelines.get(modes[0])
        results = run_modes(_config(args, args.family), modes, args.repeats, _budget(args.budget), timeline,
                            args.by_layer, timelines, _max_seconds(args.max_seconds))
        if args.html:
            from .report.run_page import write_run_html

            write_run_html(args.html, results, {**timelines, modes[0]: timeline}, args.by_layer)
    if args.json:
        for rows in results.values():
            for row in rows:
                print(json.dumps(row))
    else:
        print(run_report(results, by_layer=args.by_layer))
        if args.html:
            print(f"\nhtml: {args.html}")
    for line in agreement_lines(results):  # on stderr too, --json or not
        _warn(line)
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from .autograd.meta import Unsupported
    from .config import normalize
    from .measure.predict import PredictionTooSlow, predict
    from .report.terminal import predict_report
    from .run.single import check_budget

    config = normalize({**_config(args, args.family), "mode": args.mode})
    max_seconds = _max_seconds(args.max_seconds)
    try:
        if args.budget is not None:
            prediction = check_budget(config, _budget(args.budget), max_seconds)
            if prediction is None:  # cannot be predicted: say why
                predict(config)
        else:
            prediction = predict(config, max_seconds=max_seconds, progress=not args.no_progress)
    except PredictionTooSlow as exc:
        raise UsageError(str(exc)) from None
    except Unsupported as exc:
        raise UsageError(f"cannot predict this step: {exc}") from None
    if args.json:
        print(json.dumps({**config, **prediction}))
    else:
        print(predict_report(config, prediction))
    return 0


def main(argv: list[str] | None = None) -> int:
    from .config import ConfigError
    from .run.results.folder import PathError  # a path that cannot be written, a folder in use: bad input
    from .run.study import StudyError  # a spec that is not there or not right, flags that do not go together

    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        # `plan` reads its model itself (memstudy/plan): its flags are not a family's
        family, defaults = _family_from_argv([] if argv[:1] == ["plan"] else argv)
    except ConfigError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return USAGE_EXIT
    parser = build_parser(family, defaults)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        flag = unknown[0].split("=", 1)[0]
        parser.error(_other_familys_flag(flag, family) or f"unrecognized arguments: {' '.join(unknown)}")
    args.family = family
    try:
        return args.handler(args)
    except (UsageError, ConfigError, PathError, StudyError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return USAGE_EXIT
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        return 130
    except BrokenPipeError:  # the reader went away (`memstudy run | head`): nothing more to say
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # a failure of the tool, not of the input: still one line, exit 1
        sys.stderr.write(f"error: {type(exc).__name__}: {exc}\n")
        return FAILURE_EXIT


if __name__ == "__main__":
    raise SystemExit(main())
