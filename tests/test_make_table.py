"""results/make_table.py: re-measuring some rows leaves the committed table and its other rows alone."""
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "results"))

import make_table  # noqa: E402


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
