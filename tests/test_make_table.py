"""results/make_table.py: re-measuring some rows leaves the committed table and its other rows
alone; --compare tables and draws the runs of one folder and refuses the flags of the runs."""
import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "results"))

import make_table  # noqa: E402
import train  # noqa: E402


def fake_run(runs, method, commit):
    """A finished 2-minute seed-0 run: val 3.7 at 100 s, after 2 steps of 1,000 member-tokens."""
    d = os.path.join(runs, "120s_seed0", method)
    os.makedirs(d)
    with open(os.path.join(d, "summary.json"), "w") as f:
        json.dump({"val_bpb": 3.7, "member_tokens_per_s": 20.0, "peak_memory_mb": 99.0,
                   "commit": commit, "date": "2026-12-03", "machine": "test",
                   "baselines": {"uniform": 8.0, "unigram": 4.8, "bigram": 3.6}}, f)
    with open(os.path.join(d, "log.csv"), "w") as f:
        f.write("step,loss,val_bpb,member_tokens_per_s,elapsed_s,member_tokens\n"
                "0,,8.5,,0.0,\n2,4.0,3.7,20.0,100.0,1000\n")


def test_some_rows_go_to_the_runs_folder_and_a_stale_run_is_named(tmp_path, monkeypatch, capsys):
    runs, here = tmp_path / "runs", tmp_path / "results"
    here.mkdir()
    (here / "table.md").write_text("the committed table\n")
    fake_run(str(runs), "eggroll", "0000000")
    monkeypatch.setattr(make_table, "RUNS", str(runs))
    monkeypatch.setattr(make_table, "HERE", str(here))
    monkeypatch.setattr(sys, "argv", ["make_table.py", "--budgets", "120", "--seeds", "0",
                                      "--methods", "eggroll", "--long", "0"])
    make_table.main()                                   # the run exists: nothing is launched
    out = capsys.readouterr().out
    assert "from commit 0000000 (this checkout:" in out, out
    assert (here / "table.md").read_text() == "the committed table\n"
    assert not list(here.glob("*.png"))
    partial = (runs / "table.md").read_text()
    # reached 4.5 and 4.0 by its first evaluation (upper bounds), 3.6 never: 2 x 1,000 tokens
    assert "| EGGROLL (`eggroll.py`) | 3.700 | ≤100 / ≤2 k | ≤100 / ≤2 k | not reached | 20 | " \
        "99 MB |" in partial, partial

# -----------------------------------------------------------------------------
# --compare DIR [--reference CSV,...]: the table and figure of the train.py runs in DIR

TINY = ["--device", "cpu", "--d_model", "16", "--n_layers", "1", "--seq_len", "16",
        "--val_windows", "4", "--val_len", "32", "--log_every", "1", "--sample_bytes", "8"]


def run(argv):
    """make_table.main in-process; returns the exit code (0 or the SystemExit code)."""
    try:
        return make_table.main(argv) or 0
    except SystemExit as e:
        return e.code


@pytest.mark.parametrize("argv,message", [
    (["--reference", "results/nano_egg_cpu.csv"], "--reference works only with --compare"),
    (["--compare", "o", "--seeds", "1"], "--seeds does nothing with --compare (it reads only "
     "--compare, --reference)"),
    (["--compare", "o", "--budgets", "120"], "--budgets does nothing with --compare"),
    (["--compare", "o", "--methods", "eggroll"], "--methods does nothing with --compare"),
    (["--compare", "o", "--long", "0"], "--long does nothing with --compare"),
    (["--compare", "o", "--table_only"], "--table_only does nothing with --compare"),
])
def test_a_flag_that_does_nothing_with_compare_is_an_error(argv, message, capsys):
    """Refused in one line, exit 2, before any run is launched."""
    assert run(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_compare_table_and_figure_with_a_reference_curve(tmp_path, capsys):
    assert train.train(TINY + ["--population", "16", "--group_size", "4", "--steps", "2",
                               "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    ref = os.path.join(ROOT, "results", "nano_egg_cpu.csv")
    assert make_table.read_reference(ref)[0] == (88.3, 7.1657)
    own_log = str(tmp_path / "eggroll" / "log.csv")
    assert make_table.read_reference(own_log)[0] == (
        0.0, float(train.read_log(own_log)[0]["val_bpb"]))
    assert run(["--compare", str(tmp_path), "--reference", f"{ref},{own_log}"]) == 0
    out = capsys.readouterr().out
    assert "| eggroll | `eggroll.py` |" in out and (tmp_path / "compare.png").stat().st_size > 0
    bad = tmp_path / "bad.csv"
    bad.write_text("# a comment\nseconds,loss\n1,2\n")
    assert run(["--compare", str(tmp_path), "--reference", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot read reference curve" in err, err
    assert run(["--compare", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "summary.json found" in err, err
