"""fpwb.distributed: sharded layers equal one process bit for bit (2 gloo processes on loopback),
shards save and merge, refusals, decentralised merging in one process and over 2 ranks."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fpwb import FpConv2d, FpLinear
from fpwb.data import flatten, load
from fpwb.distributed import (ShardedLayer, free_port, gather_layer, merge_layers, merge_shards,
                              shard_bounds, shard_layer, spawn, split_layer, train_decentralised)
from fpwb.distributed.decentralised import backprop_bytes_per_sample, bytes_per_sample

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 240  # seconds for one group of 2 processes, start-up included
CASES = {  # layer keywords; the sharded run must give exactly the one-process bits
    "plain": dict(),
    "oja": dict(rule="oja"),
    "k-WTA": dict(k_winners=3, chunk_size=1),
    "k-WTA k_output batch": dict(k_winners=2, k_output=True, chunk_size=1, mode="batch"),
}


def _digits(n):
    X, _ = load("digits")
    return flatten(X)[:n].double()


def _sharded_run(folder):
    """On every rank: each case trained sharded and in one process; the differences, the shards
    saved for merging, and decentralised learners (one per rank). One group of processes for all
    (starting one costs seconds)."""
    X = _digits(600)
    rank = torch.distributed.get_rank()
    result = {}
    for name, kwargs in CASES.items():
        make = lambda: FpLinear(64, 24, seed=1, t_decay=0.01, dtype=torch.float64, **kwargs)
        full, sharded = make(), shard_layer(make())
        out = 0.0
        for batch in X.split(150):
            out = max(out, float((full(batch) - sharded(batch)).abs().max()))
        whole = gather_layer(sharded)
        result[name] = {"out": out, "fired": int(full.fire_count.sum()),
                        **{key: float((getattr(whole, key) - getattr(full, key)).double().abs().max())
                           for key in ("weight", "threshold", "fire_count", "samples_seen")}}
    images = load("digits")[0][:40].double()
    make = lambda: FpConv2d(1, 6, 3, padding=1, seed=2, t_decay=0.02, dtype=torch.float64)
    full, sharded = make(), shard_layer(make())
    result["conv"] = {"out": float((full(images) - sharded(images)).abs().max())}
    whole = gather_layer(sharded)
    result["conv"].update(weight=float((whole.weight - full.weight).abs().max()),
                          threshold=float((whole.threshold - full.threshold).abs().max()))
    sharded.save(Path(folder) / f"shard{rank}.pt")
    reloaded = ShardedLayer.load(Path(folder) / f"shard{rank}.pt")
    result["reloaded"] = bool(torch.equal(reloaded.local.weight, sharded.local.weight))
    result["sizes"] = len(sharded.local.weight)
    result["decentralised"] = _decentralised_runs()
    return result


MERGE_RUNS = ("average", "pool")


def _decentralised_runs():
    X = _digits(400)
    runs = []
    for merge in MERGE_RUNS:
        layer, info = train_decentralised(X, n_learners=2, n_neurons=12, merge_every=50, merge=merge,
                                          seed=3, distributed=True, t_decay=0.01, dtype=torch.float64)
        runs.append((layer.weight, layer.threshold, layer.fire_count, info))
    return runs


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shards")
    return spawn(_sharded_run, 2, str(folder), timeout=TIMEOUT), folder


@pytest.mark.parametrize("name", list(CASES))
def test_sharded_linear_equals_one_process(sharded, name):
    results, _ = sharded
    for rank in results:
        diff = rank[name]
        assert diff["fired"] > 50  # the layers learned something
        assert {k: v for k, v in diff.items() if k != "fired"} == dict.fromkeys(
            ("out", "weight", "threshold", "fire_count", "samples_seen"), 0.0)


def test_sharded_conv_and_saved_shards(sharded):
    results, folder = sharded
    conv = results[0]["conv"]
    assert conv["weight"] == 0 and conv["threshold"] == 0
    assert conv["out"] < 1e-15  # tiny matmuls: MKL's rows depend on the row count (see fpwb.distributed.sharded)
    assert [r["sizes"] for r in results] == [3, 3] and all(r["reloaded"] for r in results)
    whole = merge_shards([folder / "shard1.pt", folder / "shard0.pt"])  # no process group needed
    images = load("digits")[0][:40].double()
    reference = FpConv2d(1, 6, 3, padding=1, seed=2, t_decay=0.02, dtype=torch.float64)
    reference(images)
    assert torch.equal(whole.weight, reference.weight) and torch.equal(whole.threshold, reference.threshold)
    assert whole.normalize_output and int(whole.samples_seen) == 40


def test_split_and_refusals():
    layer = FpLinear(64, 10, seed=0)
    parts = [split_layer(layer, r, 3) for r in range(3)]
    assert [len(p.weight) for p in parts] == [4, 3, 3]
    assert torch.equal(torch.cat([p.weight for p in parts]), layer.weight)
    assert shard_bounds(10, 3, 2) == (7, 10)
    with pytest.raises(ValueError, match="cannot be sharded.*frontprop"):
        split_layer(FpLinear(64, 10, rule="soft_wta"), 0, 2)
    with pytest.raises(ValueError, match="repulsion"):
        split_layer(FpLinear(64, 10, k_winners=2, repulsion=0.1, chunk_size=1), 0, 2)
    with pytest.raises(ValueError, match="chunk_size=1"):
        split_layer(FpLinear(64, 10, k_winners=2), 0, 2)
    with pytest.raises(ValueError, match="more than k neurons"):
        split_layer(FpLinear(64, 10, k_winners=5, chunk_size=1), 0, 2)
    with pytest.raises(ValueError, match="FpConv2d"):
        split_layer(FpConv2d(1, 8, 3, k_winners=2, chunk_size=1), 0, 2)
    with pytest.raises(ValueError, match="cannot split 3 neurons"):
        shard_bounds(3, 4, 0)


def test_merges():
    w = torch.eye(3, dtype=torch.float64)
    fired = torch.tensor([5, 0, 1])
    ones = torch.ones(3, dtype=torch.float64)
    weight, threshold, count, source = merge_layers([w, w[[2, 0, 1]]], [ones, 0 * ones],
                                                     [fired, fired[[2, 0, 1]]], "average")
    assert torch.equal(weight, w) and torch.equal(count, 2 * fired)  # matched, not index-paired
    assert torch.equal(threshold, 0.5 * ones)
    weight, _, count, source = merge_layers([w, -w], [ones] * 2, [fired, torch.tensor([0, 9, 0])], "pool")
    assert torch.equal(weight, torch.stack([w[0], w[2], -w[1]])) and source.tolist() == [0, 2, 1]
    assert bytes_per_sample(10, 5, 1, 100) == 0 and bytes_per_sample(10, 5, 3, 100) == 2 * (10 * 6 * 4 + 80) / 100
    assert backprop_bytes_per_sample(100, 2) == 400


def test_decentralised_two_ranks_equal_one_process(sharded):
    X = _digits(400)
    for merge, (weight, threshold, fire_count, info) in zip(MERGE_RUNS, sharded[0][0]["decentralised"]):
        layer, alone = train_decentralised(X, n_learners=2, n_neurons=12, merge_every=50, merge=merge,
                                           seed=3, t_decay=0.01, dtype=torch.float64)
        assert alone == info and info["merges"] == 4 and layer.frozen and int(layer.fire_count.sum()) > 0
        assert torch.equal(weight, layer.weight) and torch.equal(threshold, layer.threshold)
        assert torch.equal(fire_count, layer.fire_count)


def test_example_under_torchrun():
    torchrun = Path(sys.executable).with_name("torchrun")
    env = dict(os.environ, OMP_NUM_THREADS="1", FPWB_OFFLINE="1")
    run = subprocess.run([str(torchrun), "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
                          "--master-port", str(free_port()), str(ROOT / "examples" / "distributed.py"), "--small"],
                         capture_output=True, text=True, timeout=TIMEOUT, env=env, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = [line for line in run.stdout.splitlines() if line.startswith("max |difference|")]
    assert len(lines) == 2 and all("weights 0, thresholds 0, outputs " in line for line in lines), lines
    # Outputs are the projections y of the fired neurons; on some CPUs torch's float64 matmul
    # rounds a row by the number of rows in the product, so they may differ by an ulp or two.
    assert all(float(line.rsplit("outputs ", 1)[1]) <= 1e-15 for line in lines), lines
    assert "(0 firings)" not in run.stdout  # both cases learned


def test_summary_averages_study_rows_over_seeds():
    from fpwb.distributed.decentralised import summary

    rows = [{"learners": 2, "merge_every": 100, "merge": "average", "seed": s, "probe_acc": acc,
             "learned_share": 1.0, "redundancy": 0.5, "bytes_per_sample": 10.0} for s, acc in ((0, 0.6), (1, 0.8))]
    rows.append({"learners": 1, "merge_every": None, "merge": "random", "seed": 0, "probe_acc": 0.7,
                 "learned_share": 0.0, "redundancy": 0.0, "bytes_per_sample": 0.0})
    table = summary(rows)
    assert [(r["merge"], r["seeds"]) for r in table] == [("average", 2), ("random", 1)]
    assert abs(table[0]["probe_acc"] - 0.7) < 1e-12 and abs(table[0]["probe_sd"] - 0.1) < 1e-12
