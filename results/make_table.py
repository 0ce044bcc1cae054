"""The main results table, re-run from scratch: every method at 2 and 10 minutes, seeds 0 and 1,
each run alone on the machine, one after the other; then the table and the figures.

    $ python results/make_table.py                    # every run (about 4 hours on 2 cores)
    $ python results/make_table.py --table_only       # the table and figures from the runs made
    $ python results/make_table.py --budgets 120 --seeds 0 --methods eggroll,backprop
    $ python results/make_table.py --compare out --reference results/nano_egg_cpu.csv

Each run is `python train.py --method M --budget_s B --seed S --out results/runs/<B>s_seed<S>`
(the methods' defaults, nothing else on the command line) in a fresh process, and EGGROLL also
at --long (30 minutes) for the long target (3.20 bits/byte); a run whose summary.json exists is kept
(delete the folder to redo it; a run from another commit is named as it is kept). With
--methods the table of those rows goes to results/runs/table.md and the figures are not drawn,
so results/table.md keeps the other rows. Without --methods it rewrites results/table.md and
the figures in this checkout: commit them before measuring more runs here, or the later runs
record the commit as "+changes" (a clean git worktree for the runs avoids both). The table
(results/table.md) gives, per method, the
median over the seeds of: val bits/byte at each budget; the wall-clock seconds and the
member-tokens (bytes scored, summed over members) at the first evaluation at or below
4.5, 4.0 and 3.6 bits/byte in the longest budget, and their ratio to backprop's; member-tokens/s;
peak memory. The figures (results/cpu_compare*.png) show seed 0's curves with the EGGROLL
authors' trainer (results/nano_egg_cpu.csv) and the n-gram lines.

--compare DIR launches nothing: it reads the train.py runs in DIR/<method>/ (any device, any
flags), prints their table and draws DIR/compare.png, with other curves from --reference (a CSV
with wall_s,val_bpb columns, or another run's log.csv).
"""
import argparse
import csv
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

import train  # noqa: E402

RUNS = os.path.join(HERE, "runs")
REFERENCE = os.path.join(HERE, "nano_egg_cpu.csv")
THRESHOLDS = (4.5, 4.0, 3.6)
# the rows: (label, method, extra flags); the reservoir is forward_forward with a frozen LM
ROWS = [("EGGROLL", "eggroll", []), ("naive ES", "es_naive", []), ("MeZO", "mezo", []),
        ("Forward-Forward", "forward_forward", []), ("NoProp", "noprop", []),
        ("reservoir", "forward_forward", ["--reservoir", "true"]),
        ("backprop", "backprop", [])]


def run_dir(budget, seed, label):
    tag = "" if label not in ("reservoir",) else "_reservoir"
    return os.path.join(RUNS, f"{budget}s_seed{seed}{tag}")


def run(label, method, flags, budget, seed, commit):
    """One training run in its own process, unless its summary.json exists (named if it comes
    from another commit than `commit`, this checkout's)."""
    out = run_dir(budget, seed, label)
    summary = os.path.join(out, method, "summary.json")
    if os.path.exists(summary):
        with open(summary) as f:
            made = json.load(f)["commit"]
        if made != commit:   # kept all the same: a notebook-only commit changes no number
            print(f"kept {os.path.relpath(summary, ROOT)} from commit {made} (this checkout: "
                  f"{commit}); delete its folder to measure it again", flush=True)
        return
    cmd = [sys.executable, "train.py", "--method", method, "--budget_s", str(budget),
           "--seed", str(seed), "--out", out, "--overwrite"] + flags
    print("$", " ".join(cmd[1:]), flush=True)
    done = subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True)
    with open(os.path.join(out, method, "console.txt"), "w") as f:   # what the user would see
        f.write(done.stdout)


def load(label, method, budget, seed):
    """(summary, [(elapsed_s, member_tokens so far, val_bpb)]) of a run, or None."""
    d = os.path.join(run_dir(budget, seed, label), method)
    path = os.path.join(d, "summary.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        summary = json.load(f)
    curve, tokens, last_step = [], 0.0, 0
    for r in train.read_log(os.path.join(d, "log.csv")):
        step = int(r["step"])
        if r.get("member_tokens"):                     # this step's; constant between log rows
            tokens += float(r["member_tokens"]) * (step - last_step)
        last_step = step
        if r["val_bpb"]:
            curve.append((float(r["elapsed_s"]), tokens, float(r["val_bpb"])))
    return summary, curve


def first_below(curve, level):
    """(seconds, member-tokens, at the run's first evaluation after step 0?) at the first
    evaluation at or below `level`, or None. At the first evaluation the level was reached
    somewhere before it: the numbers are then upper bounds."""
    return next(((s, m, i <= 1) for i, (s, m, v) in enumerate(curve) if v <= level), None)


def tokens(n):
    return f"{n / 1e6:,.1f} M" if n >= 1e6 else f"{n / 1e3:,.0f} k"


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def table(budgets, seeds, long_budget=None):
    longest = max(budgets)
    rows, reach, long_seeds = [], {}, []
    for label, method, _ in ROWS:
        runs = {(b, s): load(label, method, b, s) for b in budgets for s in seeds}
        if not any(runs.values()):
            continue
        vals = [median([r[0]["val_bpb"] for (b, _), r in runs.items() if b == budget and r])
                for budget in budgets]
        if long_budget:
            longs = [load(label, method, long_budget, s) for s in seeds]
            vals.append(median([r[0]["val_bpb"] for r in longs if r]))
            long_seeds = [s for s, r in zip(seeds, longs) if r] or long_seeds
        hits = {lvl: [first_below(r[1], lvl) for (b, _), r in runs.items() if b == longest and r]
                for lvl in THRESHOLDS}
        reach[label] = {lvl: (median([h[0] for h in hs if h]) if all(hs) else None,
                              median([h[1] for h in hs if h]) if all(hs) else None,
                              all(hs) and any(h[2] for h in hs))
                        for lvl, hs in hits.items()}
        summaries = [r[0] for (b, _), r in runs.items() if b == longest and r]
        ran = sorted({s for (_, s), r in runs.items() if r})
        rows.append((label, method, vals, median([s["member_tokens_per_s"] for s in summaries]),
                     median([s["peak_memory_mb"] for s in summaries]), summaries[0], ran))
    ref = read_reference(REFERENCE)
    base = reach.get("backprop", {})
    shown = budgets + ([long_budget] if long_budget else [])
    head = ("| method | " + " | ".join(f"val bits/byte, {b // 60} min" for b in shown) + " | "
            + " | ".join(f"to {lvl}: s (x backprop) / member-tokens (x backprop)"
                         for lvl in THRESHOLDS) + " | member-tokens/s | peak memory |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for label, method, vals, rate, mem, s, _ in rows:
        cells = [fmt(v, ".3f") for v in vals]
        for lvl in THRESHOLDS:
            sec, tok, bound = reach[label][lvl]
            b_sec, b_tok, b_bound = base.get(lvl, (None, None, False))
            # an upper bound on backprop's cost makes the ratio a lower bound, and vice versa;
            # with both bounds there is no ratio
            op = {(False, False): "", (False, True): "≥", (True, False): "≤"}.get((bound, b_bound))

            def ratio(a, b):
                return f" (x{op}{a / b:,.1f})" if a and b and op is not None else ""
            le = "≤" if bound else ""
            cells.append("not reached" if sec is None else f"{le}{sec:,.0f}{ratio(sec, b_sec)} / "
                         f"{le}{tokens(tok)}{ratio(tok, b_tok)}")
        lines.append(f"| {label} (`{method}.py`) | " + " | ".join(cells) +
                     f" | {fmt(rate, ',.0f')} | {fmt(mem, ',.0f')} MB |")
    ref_vals = [next((v for t, v in reversed(ref) if t <= b), None) if ref[-1][0] >= 0.95 * b
                else None for b in shown]                            # its curve ends at 10 min
    ref_reach = [next((t for t, v in ref if v <= lvl), None) for lvl in THRESHOLDS]
    lines.append("| nano-egg (the EGGROLL authors' trainer, results/nano_egg_cpu.csv) | "
                 + " | ".join(fmt(v, ".2f") for v in ref_vals) + " | "
                 + " | ".join("not reached" if t is None else f"{t:,.0f} / -" for t in ref_reach)
                 + " | 80-120k | 17.3 GB |")
    b = rows[0][5]["baselines"]
    lines.append(f"| uniform / unigram / bigram | {b['uniform']:.3f} / {b['unigram']:.3f} / "
                 f"{b['bigram']:.3f} |" + " |" * (len(shown) + len(THRESHOLDS) + 1))
    s = rows[0][5]
    by_seeds = {}
    for label, *_, ran in rows:
        by_seeds.setdefault(", ".join(map(str, ran)), []).append(label)
    seeds_text = "; ".join(f"{', '.join(labels)}: seed{'s' * (',' in k)} {k}"
                           for k, labels in by_seeds.items())
    lines.append("\n≤: reached by the run's first evaluation, so an upper bound (its ratio to "
                 "backprop then an upper bound too; ≥ where backprop's is the bound). "
                 "Forward-Forward, NoProp and the reservoir are scored by a float predictive on the "
                 "integer network's activities, backprop by its float32 twin"
                 + "".join(f" (its int8-rounded weights: {r[5]['val_bpb_int8']:.3f} at "
                           f"{max(budgets) // 60} min)" for r in rows
                           if r[1] == "backprop" and "val_bpb_int8" in r[5]) + ".")
    if long_seeds:
        seeds_text += (f"; {long_budget // 60} min: EGGROLL only, "
                       f"seed{'s' * (len(long_seeds) > 1)} " + ", ".join(map(str, long_seeds)))
    lines.append(f"\nMedians over the seeds run ({seeds_text}); commit {s['commit']}, "
                 f"{s['date']}, {s['machine']}; each run alone, one after another.")
    return "\n".join(lines)


def figure(budget, seed, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 5))
    baselines = None
    for label, method, _ in ROWS:
        got = load(label, method, budget, seed)
        if got:
            baselines = got[0]["baselines"]
            ax.plot([c[0] for c in got[1]], [c[2] for c in got[1]], marker="o", ms=2,
                    label=label, ls=":" if label == "reservoir" else "-")
    ref = [(t, v) for t, v in read_reference(REFERENCE) if t <= budget * 1.05]
    ax.plot(*zip(*ref), ls="--", color="black", lw=1.2, label="nano-egg (authors' trainer)")
    for name, style in (("unigram", "--"), ("bigram", ":")):
        ax.axhline(baselines[name], color="gray", ls=style, label=f"{name} {baselines[name]:.2f}")
    ax.set_ylim(2.3, 8.8)
    ax.set_xlabel("wall-clock seconds (2-core CPU)")
    ax.set_ylabel("val bits/byte")
    ax.set_title(f"the same integer LM, data and budget ({budget // 60} minutes, seed {seed})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

# -----------------------------------------------------------------------------
# --compare: the table and figure of the runs in one folder (moved from train.py)


def fail(message):
    """Bad input: one line on stderr, exit code 2."""
    print(f"make_table.py: error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def read_reference(path):
    """A curve to compare with: a CSV with `wall_s,val_bpb` columns (# lines are comments), or
    a train.py log.csv (`elapsed_s`, and `val_bpb` where evaluated)."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(line for line in f if not line.startswith("#")))
        clock = "wall_s" if rows and "wall_s" in rows[0] else "elapsed_s"
        return [(float(r[clock]), float(r["val_bpb"])) for r in rows if r["val_bpb"] != ""]
    except (OSError, KeyError, ValueError, TypeError) as e:
        fail(f"cannot read reference curve {path}: {e}")


def compare(out_root, reference=""):
    """`python results/make_table.py --compare out`: one figure and one table from every
    out/<method>/."""
    runs = []
    for method in train.METHODS:
        path = os.path.join(out_root, method, "summary.json")
        if os.path.exists(path):
            with open(path) as f:
                runs.append((json.load(f),
                             train.read_log(os.path.join(out_root, method, "log.csv"))))
    if not runs:
        fail(f"no {out_root}/<method>/summary.json found: train some methods first")
    curves = [read_reference(path) for path in filter(None, reference.split(","))]
    print("| method | file | val bits/byte | member-tokens/s | peak memory | device | wall | "
          "command |\n|---|---|---|---|---|---|---|---|")
    for s, _ in runs:
        print(f"| {s['method']} | `{s['file']}` | {s['val_bpb']:.3f} | "
              f"{s['member_tokens_per_s']:,.0f} | {s['peak_memory_mb']:.0f} MB | {s['device']} | "
              f"{s['wall_s']:.0f} s | `{s['command']}` |")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("warning: matplotlib is not installed, so compare.png was not drawn",
              file=sys.stderr)
        return 0
    fig, ax = plt.subplots(figsize=(8, 5))
    for summary, rows in runs:
        pts = [(float(r["elapsed_s"]), float(r["val_bpb"])) for r in rows if r["val_bpb"] != ""]
        ax.plot(*zip(*pts), marker="o", ms=3, label=summary["method"])
    for path, curve in zip(filter(None, reference.split(",")), curves):
        name = os.path.basename(path)
        if name == "log.csv":   # another run: name it by its folders, e.g. cpu_reservoir/...
            name = "/".join(os.path.normpath(path).split(os.sep)[-3:-1])
        ax.plot(*zip(*curve), ls="--", lw=1.5, label=name)
    base = runs[0][0]["baselines"]
    for name, style in (("uniform", "-."), ("unigram", "--"), ("bigram", ":")):
        ax.axhline(base[name], color="gray", ls=style, label=f"{name} {base[name]:.2f}")
    ax.set_xlabel("wall-clock seconds")
    ax.set_ylabel("val bits/byte")
    ax.set_title(f"same integer LM, same data, same budget ({runs[0][0]['device']})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out_root, "compare.png"), dpi=110)
    return 0


# the flags of the table's runs: none of them is read by --compare
RUN_FLAGS = ("budgets", "seeds", "methods", "long", "table_only")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budgets", default="120,600", help="seconds per run, comma-separated")
    p.add_argument("--seeds", default="0,1", help="comma-separated")
    p.add_argument("--methods", default="", help="only these rows' methods (default: all)")
    p.add_argument("--long", type=int, default=1800, help="EGGROLL's long budget (0: none)")
    p.add_argument("--table_only", action="store_true", help="no runs: table and figures only")
    p.add_argument("--compare", default="", metavar="DIR",
                   help="no runs: plot DIR/compare.png and print the table of the train.py "
                        "runs in DIR/<method>/")
    p.add_argument("--reference", default="", metavar="CSV[,CSV]",
                   help="with --compare: also plot other curves: a CSV with wall_s,val_bpb "
                        "columns (e.g. results/nano_egg_cpu.csv) or another run's log.csv")
    args = p.parse_args(argv)
    if args.reference and not args.compare:
        fail("--reference works only with --compare")
    if args.compare:
        for name in RUN_FLAGS:
            if getattr(args, name) != p.get_default(name):
                fail(f"--{name} does nothing with --compare (it reads only --compare, "
                     f"--reference)")
        return compare(args.compare, args.reference)
    budgets = [int(b) for b in args.budgets.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    wanted = set(filter(None, args.methods.split(",")))
    if not args.table_only:
        commit = train.provenance()["commit"]
        for budget in budgets:
            for seed in seeds:
                for label, method, flags in ROWS:
                    if not wanted or method in wanted:
                        run(label, method, flags, budget, seed, commit)
        for seed in seeds if args.long and (not wanted or "eggroll" in wanted) else []:
            run("EGGROLL", "eggroll", [], args.long, seed, commit)
    text = table(budgets, seeds, args.long or None)
    print(text)
    if wanted:   # some rows only: results/table.md and the figures keep every row's runs
        path = os.path.join(RUNS, "table.md")
        with open(path, "w") as f:
            f.write(text + "\n")
        print(f"(--methods: written to {os.path.relpath(path, ROOT)}, not results/table.md; "
              f"merge its rows by hand)")
        return
    with open(os.path.join(HERE, "table.md"), "w") as f:
        f.write(text + "\n")
    for budget in budgets:
        name = "cpu_compare.png" if budget == min(budgets) else f"cpu_compare_{budget // 60}min.png"
        figure(budget, seeds[0], os.path.join(HERE, name))


if __name__ == "__main__":
    main()
