"""Several sweep processes (or threads) on one store: every trial runs exactly once."""

import re
import sqlite3
import threading

from ddscope.runs.store import Store
from .helpers_sweep import FAST, duplicate_rows, integrity_ok, sets, start, store_rows

N_TRIALS = 6


def test_two_sweep_processes_share_one_store_and_run_each_trial_once(tmp_path):
    run = tmp_path / "run"
    args = ["sweep", "mnist1d-mlp", *sets(FAST + ["model.width=[16,32,64,96,128,160]", "optim.epochs=20"]),
            "--out", str(run), "--executor", "inprocess", "--no-report", "--quiet"]
    # Started together, so they also race to create the store.
    procs = [start(*args, log=tmp_path / f"p{i}.log") for i in range(2)]
    codes = [p.wait(timeout=300) for p in procs]
    logs = [(tmp_path / f"p{i}.log").read_text() for i in range(2)]
    # The process that runs out of trials first while the other still trains exits 3 ("not
    # finished", not "done"); the last one to finish exits 0.
    assert set(codes) <= {0, 3} and 0 in codes, (codes, logs)
    assert all("not finished" in log for code, log in zip(codes, logs) if code == 3)
    ran = [int(re.search(r"this run: (\d+)", (tmp_path / f"p{i}.log").read_text()).group(1)) for i in range(2)]
    rows = store_rows(run)
    assert len(rows) == N_TRIALS and {r["status"] for r in rows} == {"done"}
    assert [r["attempts"] for r in rows] == [1] * N_TRIALS  # claimed once each
    assert sum(ran) == N_TRIALS, ran  # and run once each, across both processes
    assert duplicate_rows(run) == 0 and integrity_ok(run)
    print(f"trials run by each process: {ran}")


def test_claims_from_many_connections_never_overlap(tmp_path):
    path = tmp_path / "store.sqlite"
    Store.create(path, {}).add_trials([(f"t{i:03d}", {"seed": i}) for i in range(120)])
    got: list[list[str]] = [[] for _ in range(6)]

    def claimer(k: int) -> None:
        store = Store.open(path)  # one connection per thread, as one per process
        try:
            while (c := store.claim(f"w:{k}:x", stale_after=1e9)) is not None:
                got[k].append(c[0])
        except sqlite3.OperationalError as e:  # pragma: no cover — would be a locking bug
            got[k].append(f"error {e}")
        finally:
            store.close()

    threads = [threading.Thread(target=claimer, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    claimed = sorted(c for g in got for c in g)
    assert claimed == [f"t{i:03d}" for i in range(120)]
