"""Realistic federations on configs/federation/fedavg.yaml, 3 seeds each (issue 16):

  * availability: accuracy as fewer clients are online per round (FedAvg);
  * byzantine: accuracy under sign-flipping devices (update reversed, ×4) at 0, 10 and 30% of the clients,
    for every aggregation rule;
  * server: FedAvg against FedAvgM, FedAdam and FedYogi (three server learning rates each), FedProx and
    SCAFFOLD, over the base config's Adam clients and (server_sgd) over SGD clients at lr 0.1;
  * ranks: devices of three compute classes (LoRA ranks 2, 4, 8 in turn) aggregated by zero-padding (HetLoRA)
    or stacking (FLoRA), against every device at rank 2 or at rank 8;
  * stragglers: each device manages ⌈5u⌉ of its 5 local steps, u uniform in [1 − spread, 1]: partial work
    used, dropped at the deadline, or (buffered, FedBuff) all 5 steps done over ⌈5/⌈5u⌉⌉ rounds and
    aggregated late, down-weighted by staleness, the server stepping every 10 arrivals; against synchronous
    FedAvg that waits for every client's 5 steps, which fits fewer rounds into the same time;
  * privacy: DP-FedAvg (10 of the 20 clients per round, updates clipped to 0.5) at noise multipliers 0 (clipping
    only) to 4, with the ε(10⁻⁵) the accountant gives after the run; and FedAvg under secure aggregation
    (the same accuracy, more uplink).

    python experiments/federation.py                        # all three: results/federation/*.csv, *.md, plot
    python experiments/federation.py --part byzantine --rounds 2 --seeds 0   # a smoke run
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import numpy as np  # noqa: E402
from common import Stopwatch, run_grid, write_rows_csv  # noqa: E402

from jaxdfl import load_config  # noqa: E402
from jaxdfl.federation import StragglerConfig, steps_plan  # noqa: E402

CONFIG = "federation/fedavg"
RATES = (1.0, 0.7, 0.4, 0.2)
SHARES = (0.0, 0.1, 0.3)
RULES = {"mean": [], "median": [], "trimmed_mean": ["aggregation.trim=0.3"],
         "krum": ["aggregation.byzantine=6"], "multi_krum": ["aggregation.byzantine=6"],
         "norm_clip": ["aggregation.clip_norm=1.0"]}
SERVERS = {"FedAvg": [],
           "FedAvgM": ["server_optimizer.name=fedavgm", "server_optimizer.learning_rate=1.0",
                       "server_optimizer.momentum=0.9"],
           "FedAvgM_0.3": ["server_optimizer.name=fedavgm", "server_optimizer.learning_rate=0.3",
                           "server_optimizer.momentum=0.9"],
           "FedAvgM_0.1": ["server_optimizer.name=fedavgm", "server_optimizer.learning_rate=0.1",
                           "server_optimizer.momentum=0.9"],
           "FedAdam": ["server_optimizer.name=fedadam", "server_optimizer.learning_rate=0.01"],
           "FedAdam_0.003": ["server_optimizer.name=fedadam", "server_optimizer.learning_rate=0.003"],
           "FedAdam_0.001": ["server_optimizer.name=fedadam", "server_optimizer.learning_rate=0.001"],
           "FedYogi": ["server_optimizer.name=fedyogi", "server_optimizer.learning_rate=0.01"],
           "FedYogi_0.003": ["server_optimizer.name=fedyogi", "server_optimizer.learning_rate=0.003"],
           "FedYogi_0.001": ["server_optimizer.name=fedyogi", "server_optimizer.learning_rate=0.001"],
           "FedProx": ["optimizer.prox_mu=0.1"],
           "SCAFFOLD": ["scaffold.enabled=true"]}


def pm(summary: dict, key: str = "final_accuracy") -> str:
    return f"{summary[key]:.3f} ± {spread(summary, key):.3f}"


def spread(summary: dict, key: str = "final_accuracy") -> float:
    """The std over seeds (0 for a single seed)."""
    return summary.get("std", {}).get(key, 0.0)


def availability(out: Path, rounds, seeds) -> list[str]:
    grid = {f"rate_{r}": [f"availability.rate={r}"] for r in RATES}
    results = run_grid(CONFIG, grid, out / "availability", rounds, seeds)
    lines = ["| online rate | accuracy | clients per round | messages lost to being offline |", "|---:|---:|---:|---:|"]
    rows = []
    for rate, (name, res) in zip(RATES, results.items()):
        s = res["summary"]
        online = s.get("online_share", 1.0) * s["num_devices"]
        lost = s.get("messages_total", {}).get("lost_unavailable", 0.0)
        lines.append(f"| {rate} | {pm(s)} | {online:.1f} | {lost:.0f} |")
        rows.append({"rate": rate, "accuracy": s["final_accuracy"], "std": spread(s),
                     "online_per_round": online})
    write_rows_csv(out / "availability.csv", rows)
    return lines


def byzantine(out: Path, rounds, seeds) -> tuple[list[str], dict]:
    attack = ["attack.kind=sign_flip", "attack.scale=4.0"]
    grid = {f"{rule}_{share}": extra + ([f"attack.share={share}", *attack] if share else [])
            + [f"aggregation.rule={rule}"] for rule, extra in RULES.items() for share in SHARES}
    results = run_grid(CONFIG, grid, out / "byzantine", rounds, seeds)
    lines = ["| rule | " + " | ".join(f"{int(100 * s)}% Byzantine" for s in SHARES) + " |",
             "|---|" + "---:|" * len(SHARES)]
    rows, curves = [], {}
    for rule in RULES:
        cells = []
        for share in SHARES:
            s = results[f"{rule}_{share}"]["summary"]
            cells.append(pm(s))
            rows.append({"rule": rule, "share": share, "accuracy": s["final_accuracy"],
                         "std": spread(s)})
        lines.append(f"| {rule} | " + " | ".join(cells) + " |")
        curves[rule] = [(share, results[f"{rule}_{share}"]["summary"]) for share in SHARES]
    write_rows_csv(out / "byzantine.csv", rows)
    return lines, curves


SGD_CLIENTS = ["optimizer.name=sgd", "optimizer.learning_rate=0.1"]  # 0.5 diverged (seed 0, round 3)
SERVERS_SGD = {name: overrides for name, overrides in SERVERS.items()
               if name in ("FedAvg", "FedAvgM", "FedAdam", "FedProx", "SCAFFOLD")}


def server(out: Path, rounds, seeds, sgd: bool = False) -> list[str]:
    """Server optimizers over Adam clients (the base config), or with ``sgd`` over SGD clients (Reddi et al.'s
    and Karimireddy et al.'s setting: their analyses assume client SGD)."""
    grid = SERVERS_SGD if sgd else SERVERS
    results = run_grid(CONFIG, {name.lower(): overrides + (SGD_CLIENTS if sgd else [])
                                for name, overrides in grid.items()}, out / ("server_sgd" if sgd else "server"),
                       rounds, seeds)
    lines = ["| algorithm | server learning rate | accuracy | accuracy at round 10 |", "|---|---:|---:|---:|"]
    rows = []
    for name, overrides in grid.items():
        res = results[name.lower()]
        s = res["summary"]
        mid = next((m["accuracy"] for m in res["metrics"] if m["round"] == 10 and "accuracy" in m), float("nan"))
        lr = next((o.split("=")[1] for o in overrides if o.startswith("server_optimizer.learning_rate")), "–")
        lines.append(f"| {name.split('_')[0]} | {lr} | {pm(s)} | {mid:.3f} |")
        rows.append({"server": name, "accuracy": s["final_accuracy"], "std": spread(s),
                     "accuracy_round_10": mid})
    write_rows_csv(out / ("server_sgd.csv" if sgd else "server.csv"), rows)
    return lines


NOISE = (0.0, 0.5, 1.0, 2.0, 4.0)
RANKS = {"LoRA r=2": ["method.rank=2", "method.alpha=4.0"], "LoRA r=8": ["method.rank=8", "method.alpha=16.0"],
         "HetLoRA 2/4/8": ["method.name=hetlora", "method.rank=8", "method.alpha=16.0", "method.ranks=[2,4,8]"],
         "FLoRA 2/4/8": ["method.name=flora", "method.rank=8", "method.alpha=16.0", "method.ranks=[2,4,8]"]}
SPREADS = (0.0, 0.5, 0.8)


def ranks(out: Path, rounds, seeds) -> list[str]:
    results = run_grid(CONFIG, {name.lower().replace(" ", "_").replace("/", "-").replace("=", ""): o
                                for name, o in RANKS.items()}, out / "ranks", rounds, seeds)
    lines = ["| devices' ranks | aggregation | trained entries per device | accuracy |", "|---|---|---:|---:|"]
    rows = []
    for name, res in zip(RANKS, results.values()):
        s = res["summary"]
        how = {"HetLoRA": "zero-padding", "FLoRA": "stacking"}.get(name.split()[0], "FedAvg")
        lines.append(f"| {name} | {how} | {s['trainable_params']:.0f} | {pm(s)} |")
        rows.append({"variant": name, "trainable": s["trainable_params"], "accuracy": s["final_accuracy"],
                     "std": spread(s)})
    write_rows_csv(out / "ranks.csv", rows)
    return lines


def waiting_rounds(spread: float, ticks: int, seed: int = 0) -> int:
    """Rounds of synchronous FedAvg that waits for every client's E steps within ``ticks`` rounds of the
    deadline rules' time (a round lasts as long as its slowest job, ⌈E/⌈E·u⌉⌉ ticks)."""
    base = load_config(CONFIG)
    plan = steps_plan(StragglerConfig(spread=spread), base.num_devices, base.local_steps, seed)
    spent, done = 0, 0
    while spent + (length := int(np.ceil(base.local_steps / plan(done)).max())) <= ticks:
        spent, done = spent + length, done + 1
    return done


def stragglers(out: Path, rounds, seeds) -> list[str]:
    ticks = rounds or load_config(CONFIG).rounds
    extra = [f"rounds={rounds}"] if rounds else []  # the wait rows set their own
    grid = {"spread_0.0": extra}
    grid |= {f"{rule}_{sp}": [f"stragglers.spread={sp}", f"stragglers.rule={rule}", *extra] for sp in SPREADS[1:]
             for rule in ("partial", "drop", "buffered")}
    grid |= {f"wait_{sp}": [f"rounds={waiting_rounds(sp, ticks)}"] for sp in SPREADS[1:]}
    results = run_grid(CONFIG, grid, out / "stragglers", None, seeds)
    lines = ["| spread | rule | mean local steps done | uploads per round | lost late per round | server steps | "
             "mean staleness τ | accuracy |", "|---:|---|---:|---:|---:|---:|---:|---:|"]
    rows = []
    for name, res in results.items():
        s = res["summary"]
        rule, sp = ("–", 0.0) if name == "spread_0.0" else (name.split("_")[0], float(name.split("_")[1]))
        steps = [m["local_steps_mean"] for m in res["metrics"] if "local_steps_mean" in m]
        total = s.get("messages_total", {})
        late = total.get("lost_late", 0.0) / s["rounds"]
        uploads = total.get("delivered", s["rounds"] * s["num_devices"]) / ticks
        server_steps = s.get("server_steps", s["rounds"])
        stale = s.get("staleness_mean", 0.0)
        lines.append(f"| {sp} | {rule} | {sum(steps) / len(steps) if steps else 5.0:.2f} | {uploads:.1f} | "
                     f"{late:.1f} | {server_steps:.1f} | {stale:.2f} | {pm(s)} |")
        rows.append({"spread": sp, "rule": rule, "accuracy": s["final_accuracy"], "std": spread(s),
                     "uploads_per_round": uploads, "server_steps": server_steps, "staleness_mean": stale})
    write_rows_csv(out / "stragglers.csv", rows)
    return lines


def privacy(out: Path, rounds, seeds) -> list[str]:
    base = ["topology.clients_per_round=10", "privacy.clip_norm=0.5"]
    grid = {"no_dp": ["topology.clients_per_round=10"]}
    grid |= {f"z_{z}": [*base, "privacy.mechanism=central", f"privacy.noise_multiplier={z}"] for z in NOISE}
    grid["secagg"] = ["topology.clients_per_round=10", "secure_aggregation.enabled=true"]
    results = run_grid(CONFIG, grid, out / "privacy", rounds, seeds)
    lines = ["| variant | noise multiplier z | ε at δ = 1e-5 | uplink Mbit (run) | accuracy |",
             "|---|---:|---:|---:|---:|"]
    rows = []
    for name, res in results.items():
        s = res["summary"]
        z = name[2:] if name.startswith("z_") else "–"
        eps = s.get("epsilon")
        label = {"no_dp": "FedAvg", "secagg": "FedAvg, secure aggregation"}.get(name, "DP-FedAvg, clip 0.5")
        budget = "∞" if name.startswith("z_") and eps is None else "–" if eps is None else f"{eps:.3g}"
        lines.append(f"| {label} | {z} | {budget} | {s['uplink_bits_total'] / 1e6:.1f} | {pm(s)} |")
        rows.append({"variant": name, "epsilon": eps, "uplink_bits": s["uplink_bits_total"],
                     "accuracy": s["final_accuracy"], "std": spread(s)})
    write_rows_csv(out / "privacy.csv", rows)
    return lines


def plot(curves: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for rule, points in curves.items():
        shares = [100 * share for share, _ in points]
        mean = [s["final_accuracy"] for _, s in points]
        std = [spread(s) for _, s in points]
        ax.errorbar(shares, mean, yerr=std, marker="o", capsize=3, label=rule)
    ax.set(xlabel="Byzantine clients (%), sign flip ×4", ylabel="accuracy (mean ± std, 3 seeds)",
           title="Aggregation rules under attack")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["availability", "byzantine", "server", "server_sgd", "privacy", "ranks",
                                           "stragglers", "all"], default="all")
    parser.add_argument("--rounds", type=int, default=None, help="override the config's rounds")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="results/federation")
    args = parser.parse_args()
    clock = Stopwatch()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sections = []
    if args.part in ("availability", "all"):
        sections += ["## Availability", *availability(out, args.rounds, args.seeds), ""]
    if args.part in ("byzantine", "all"):
        lines, curves = byzantine(out, args.rounds, args.seeds)
        sections += ["## Byzantine clients", *lines, ""]
        plot(curves, out / "byzantine.png")
    if args.part in ("server", "all"):
        sections += ["## Server optimizers", *server(out, args.rounds, args.seeds), ""]
    if args.part in ("server_sgd", "all"):
        sections += ["## Server optimizers over SGD clients", *server(out, args.rounds, args.seeds, sgd=True), ""]
    if args.part in ("ranks", "all"):
        sections += ["## Heterogeneous ranks", *ranks(out, args.rounds, args.seeds), ""]
    if args.part in ("stragglers", "all"):
        sections += ["## Stragglers", *stragglers(out, args.rounds, args.seeds), ""]
    if args.part in ("privacy", "all"):
        sections += ["## Differential privacy", *privacy(out, args.rounds, args.seeds), ""]
    (out / f"{args.part}.md").write_text("\n".join(sections))
    print("\n".join(sections))
    print(f"wrote {out} in {clock}")


if __name__ == "__main__":
    main()
