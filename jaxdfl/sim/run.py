"""The run loop: Python orchestrates evaluation, logging and checkpoints; the rounds between two of them run
as one jitted program (a ``lax.scan``). Everything a run produces lands in its output folder
(:mod:`jaxdfl.sim.run_folder`): config.yaml, metrics.jsonl, summary.json, curves.png, checkpoints/.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import jax
from tqdm.auto import tqdm

from jaxdfl.config import Config, load_config, resolve_path
from jaxdfl.errors import Diverged, Interrupted, UserError, warn
from jaxdfl.sim.checkpoint import Checkpointer
from jaxdfl.sim.processes import is_primary
from jaxdfl.sim.replicas import Single, build_runner, merged
from jaxdfl.sim.run_folder import RunFolder, strict
from jaxdfl.sim.schedule import segments
from jaxdfl.sim.state import SimState
from jaxdfl.sim.writers import make_writers


def default_out_dir(source) -> Path:
    name = "custom" if not isinstance(source, (str, Path)) and source is not None else (
        resolve_path(source or "quickstart").stem)
    return Path("runs") / f"{name}-{datetime.now():%Y%m%d-%H%M%S}"


@contextmanager
def _graceful_stop(say):
    """The first Ctrl-C (or SIGTERM) asks the loop to stop after the stretch of rounds it is running, so that
    stretch is saved; a second Ctrl-C stops at once. Yields the flag (a one-element list)."""
    requested = [False]
    if threading.current_thread() is not threading.main_thread():
        yield requested
        return

    def handler(signum, frame):
        if requested[0]:
            raise KeyboardInterrupt
        requested[0] = True
        say("jaxdfl: stopping after the rounds now running, to save them (Ctrl-C again stops at once)")

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield requested
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def run(config: str | Path | dict | Config | None = None, overrides=(), out: str | Path | None = None,
        resume: bool = False, progress: bool = True, writers=(), verbose: bool = False) -> tuple[dict, SimState]:
    """Run one simulation end to end and write its output folder.

    Between two evaluations or checkpoints the rounds run as one program; ``metrics.jsonl`` is written after
    each such stretch, and ``wall_s`` of each of its rounds is the stretch's time (its evaluation included)
    divided by its rounds. Ctrl-C or SIGTERM stop after the running stretch and save it (a second Ctrl-C
    stops at once); either way :class:`~jaxdfl.errors.Interrupted` says which round is saved.

    Args:
      config: a YAML path, a bundled config name (``"quickstart"``), a dict, a :class:`Config`, or None.
      overrides: ``["method.rank=8", ...]`` applied on top of ``config``.
      out: output folder; default ``runs/<config>-<timestamp>``.
      resume: continue from the newest checkpoint in ``out`` that restores (same config required).
      progress: show a progress bar over rounds.
      writers: metric writers beside ``metrics.jsonl``: ``"tensorboard"``, ``"wandb"``.
      verbose: say what the run is doing (loading, compiling; with ``progress=False`` a line per evaluation).

    Returns ``(summary, state)``: the dict written to ``summary.json`` and the final :class:`SimState`.
    Raises :class:`~jaxdfl.errors.Diverged` when ``on_nonfinite: stop`` ends the run.
    """
    primary = is_primary()  # of a multi-process run (jaxdfl.sim.processes), only process 0 writes and talks
    say = print if verbose and primary else (lambda *args, **kwargs: None)
    progress, writers = progress and primary, writers if primary else ()
    cfg = load_config(config, overrides)
    if resume and out is None:
        raise UserError("resume needs the run's folder: pass out=DIR (CLI: --out DIR)")
    folder = RunFolder(Path(out) if out is not None else default_out_dir(config), primary)
    make_writers(writers, folder.out, cfg.to_dict(), check_only=True)
    fresh = folder.claim(resume)
    resume, started = not fresh, False
    try:
        if resume and folder.saved_config() != cfg.to_dict():
            raise UserError(f"cannot resume: the config differs from the one saved in {folder.out / 'config.yaml'}")
        start = time.time()
        runner = build_runner(cfg, status=say)
        if not resume:
            folder.start(cfg.to_dict())
        started = True
        summary, state = _run_rounds(runner, folder, resume, progress, writers, say, start)
    except (Diverged, KeyboardInterrupt):
        folder.release()
        raise
    except BaseException as err:
        if started:
            folder.write_summary({"status": "failed", "error": f"{type(err).__name__}: {err}"})
        folder.release(failed=not started)
        raise
    folder.release()
    return summary, state


def _run_rounds(sim: Single, folder: RunFolder, resume: bool, progress: bool, writer_names, say, start):
    cfg = sim.config
    state = sim.init_state()
    initial = sim.initial_record()
    checkpointer = Checkpointer(folder.out / "checkpoints")
    done, records = 0, []
    if resume:
        logged = folder.read_metrics(cfg.rounds)
        # a checkpoint counts only with the metrics of its rounds (a kill can cut the last line; a file can be
        # lost); and a folder whose checkpoints all fail is never silently started over
        restored = checkpointer.restore_newest(state, upto=max((r["round"] for r in logged), default=0))
        if restored is None and checkpointer.rounds():
            raise UserError(f"cannot resume {folder.out}: no checkpoint of rounds {checkpointer.rounds()} restores "
                            f"with the metrics of its rounds (see the warnings); to start over, delete "
                            f"{folder.out / 'checkpoints'} and {folder.metrics.name}")
        if restored is not None:
            done, state = restored
        records = [r for r in logged if r["round"] <= done]
    folder.rewrite_metrics(records)
    writers = make_writers(writer_names, folder.out, cfg.to_dict())
    plan = segments(done, cfg.rounds, cfg.eval_every, cfg.checkpoint_every)
    if plan:
        say(f"jaxdfl: compiling the round program ({plan[0][1] - plan[0][0]} rounds per program)…")
    bar = tqdm(total=cfg.rounds, initial=done, desc="rounds", unit="round", disable=not progress, dynamic_ncols=True)
    postfix, acc, diverged = {}, None, None
    try:
        with _graceful_stop(say) as stop_requested, folder.append_metrics() as jsonl:
            for first, stop in plan:
                t0 = time.time()
                inputs = sim.inputs(first, stop)
                # `state` is donated to the program: until the records below are written, only `new_state`
                # is alive, and it belongs to rounds the metrics do not hold yet.
                new_state, metrics = sim.run_rounds(state, inputs)
                metrics = jax.device_get(metrics)
                new = sim.records(metrics, range(first, stop), inputs)
                bad = [i for i, r in enumerate(new) if r["nonfinite_devices"]]
                if bad and cfg.on_nonfinite == "stop":
                    new, diverged = new[:bad[0] + 1], (first + bad[0] + 1, sim.diverged_devices(metrics, bad[0]))
                elif bad and not any(r.get("nonfinite_devices") for r in records):
                    warn(f"round {first + bad[0] + 1}: non-finite loss or adapter on "
                         f"{new[bad[0]]['nonfinite_devices']} device(s); on_nonfinite: {cfg.on_nonfinite} goes on")
                if diverged is None and (stop % cfg.eval_every == 0 or stop == cfg.rounds):
                    acc = sim.evaluate(new_state, stop - 1)
                    new[-1] = merged(new[-1], sim.accuracy_record(acc, new_state))
                    postfix["acc"] = f"{new[-1]['accuracy']:.3f}"
                for record in new:
                    record["wall_s"] = (time.time() - t0) / len(new)
                    record = strict(record)
                    jsonl.write(json.dumps(record, allow_nan=False) + "\n")
                    for writer in writers:
                        writer.write(record)
                jsonl.flush()
                records += new
                if diverged is not None:
                    break
                state, done = new_state, stop
                postfix["loss"] = f"{new[-1]['train_loss']:.3f}"
                bar.set_postfix(postfix, refresh=False)
                bar.update(len(new))
                if not progress and "accuracy" in new[-1]:
                    say(f"round {done}/{cfg.rounds}: loss {new[-1]['train_loss']:.3f}, accuracy "
                        f"{new[-1]['accuracy']:.3f} ({time.time() - start:.0f} s)")
                if cfg.checkpoint_every and done % cfg.checkpoint_every == 0:
                    checkpointer.save(done, state)
                if stop_requested[0]:
                    raise KeyboardInterrupt
    except KeyboardInterrupt:
        saved = _save_if_alive(checkpointer, done, state)
        raise Interrupted(folder.out, saved, cfg.rounds) from None
    finally:
        bar.close()
        if diverged is None:
            _save_if_alive(checkpointer, done, state)  # a crash loses no completed stretch
        checkpointer.close()
        for writer in writers:
            writer.close()
    if diverged is not None:
        round_, devices = diverged
        saved = checkpointer.latest_round()
        shown = ", ".join(map(str, devices[:8])) + (", …" if len(devices) > 8 else "")
        kept = f"{folder.out} keeps round {saved}, the last finite checkpoint" if saved else "no round was saved"
        message = (f"round {round_} diverged: non-finite loss or adapter on {len(devices)} of {cfg.num_devices} "
                   f"devices ({shown}); {kept} (on_nonfinite: stop; or drop_device, continue)")
        folder.write_summary({"status": "diverged", "diverged_round": round_, "diverged_devices": devices.tolist(),
                              "saved_round": saved or 0, "error": message})
        raise Diverged(message)
    if acc is None:  # resumed at the very end: evaluate the restored state
        acc = sim.evaluate(state, cfg.rounds - 1)
    summary = sim.summarize(state, records, initial, acc, time.time() - start)
    folder.write_summary(strict(summary))
    if folder.primary:
        from jaxdfl.plotting import plot_run

        plot_run(folder.out)
    return summary, state


def _save_if_alive(checkpointer: Checkpointer, done: int, state: SimState) -> int | None:
    """Checkpoint ``state`` after ``done`` rounds unless the program it was donated to is still running;
    the round now saved."""
    if not any(leaf.is_deleted() for leaf in jax.tree.leaves(state)):
        checkpointer.save(done, state)
    return checkpointer.latest_round()
