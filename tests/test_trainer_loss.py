"""The loss, the sketch and the hash embedding against hand re-implementations on tiny tensors."""
from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from omnisearchsage.model.hash_embedding import HashEmbeddingBag
from omnisearchsage.trainer.config import LossConfig
from omnisearchsage.trainer.loss import MultiTaskLoss, PairBatch, SampledSoftmaxLoss
from omnisearchsage.trainer.sketch import CountMinSketch

# A sketch this wide is exact on a handful of keys, so the reference can count with Counters.
EXACT = LossConfig(sketch_width=2**20, sketch_depth=2, init_scale=5.0)


def _reference(q, p, qid, pid, n, nid, scale, counts, dims, weights):
    """The loss written out row by row, from the docstring's equation, with exact counts."""
    qid, pid, nid = qid.tolist(), pid.tolist(), nid.tolist()
    positives = set(zip(qid, pid))
    total = 0.0
    for d, w in zip(dims, weights):
        qd, pd, nd = (F.normalize(x[:, :d], dim=-1) for x in (q, p, n))
        for cands, cand_ids, qcount, kind in ((pd, pid, counts["in"], "in"), (nd, nid, counts["rnd"], "rnd")):
            n_cands, seen = len(cand_ids), sum(qcount.values())
            rows = []
            for i in range(len(qid)):
                p_given_q = counts["pair"][(qid[i], pid[i])] / counts["query"][qid[i]]
                logits = [scale * float(qd[i] @ pd[i]) - math.log(p_given_q)]
                for j, c in enumerate(cand_ids):
                    if (qid[i], c) in positives:  # accidental hit: same entity, or another positive of q
                        continue
                    log_q = math.log(n_cands * qcount[c] / seen)
                    logits.append(scale * float(qd[i] @ cands[j]) - log_q)
                rows.append(-torch.log_softmax(torch.tensor(logits, dtype=torch.float64), 0)[0].item())
            total += w * sum(rows) / len(rows)
    return total


def _update(counts, qid, pid, nid):
    counts["query"].update(qid.tolist())
    counts["pair"].update(zip(qid.tolist(), pid.tolist()))
    counts["in"].update(pid.tolist())
    counts["rnd"].update(nid.tolist())


def _batch(gen, qid, pid, nid, dim=4):
    q, p, n = (F.normalize(torch.randn(k, dim, generator=gen), dim=-1) for k in (len(qid), len(pid), len(nid)))
    return PairBatch(q, p, qid, pid, p, qid, pid, n, nid)


def test_loss_matches_hand_reimplementation_over_two_steps():
    gen = torch.Generator().manual_seed(0)
    dims, weights = (2, 4), (0.5, 1.0)
    loss = SampledSoftmaxLoss("t", EXACT, dims, weights)
    counts = {k: Counter() for k in ("query", "pair", "in", "rnd")}
    # Query 5 appears twice (entities 1 and 2); entity 1 is also query 6's positive; random
    # negatives include 2 (a positive of query 5 in another row) and repeat 9.
    steps = [
        (torch.tensor([5, 5, 6, 7]), torch.tensor([1, 2, 1, 3]), torch.tensor([2, 9, 9, 4, 8, 1])),
        (torch.tensor([5, 8, 8, 7]), torch.tensor([1, 4, 3, 3]), torch.tensor([3, 9, 0, 5, 6, 7])),
    ]
    for qid, pid, nid in steps:
        b = _batch(gen, qid, pid, nid)
        _update(counts, qid, pid, nid)
        got = loss(b)
        want = _reference(b.query, b.pos, qid, pid, b.neg, nid, 5.0, counts, dims, weights)
        assert got.total.item() == pytest.approx(want, rel=1e-5)
    assert set(got.components) == {"in_batch@2", "random@2", "in_batch@4", "random@4"}


def test_logq_correction_upweights_rarely_drawn_negatives():
    # Two negatives with the same vector: once 20 has been drawn 50 times before, 21 is the rare
    # one, its -log Q is larger, it weighs more in the softmax, and the loss rises.
    gen = torch.Generator().manual_seed(1)
    b = _batch(gen, torch.tensor([0, 1]), torch.tensor([10, 11]), torch.tensor([20, 21]))
    b = b._replace(neg=b.neg[:1].expand(2, -1))
    fresh = SampledSoftmaxLoss("t", EXACT, (4,), (1.0,))(b).components["random@4"]
    warmed = SampledSoftmaxLoss("t", EXACT, (4,), (1.0,))
    warmed.random_counts.update(torch.tensor([20] * 50))
    assert warmed(b).components["random@4"] > fresh + 1.0


def test_scale_is_learned_and_clamped():
    loss = SampledSoftmaxLoss("t", LossConfig(sketch_width=64, max_scale=100.0), (4,), (1.0,))
    assert loss.scale.item() == pytest.approx(1 / 0.07)
    with torch.no_grad():
        loss.log_scale.fill_(math.log(1000.0))
    gen = torch.Generator().manual_seed(2)
    out = loss(_batch(gen, torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([2, 3])))
    assert loss.scale.item() == pytest.approx(100.0)
    out.total.backward()
    assert loss.log_scale.grad is not None and loss.log_scale.grad.item() != 0.0


def test_all_candidates_masked_gives_finite_zero_loss():
    # Every candidate is a hit: the softmax has only the positive, the loss is 0, not NaN.
    loss = SampledSoftmaxLoss("t", EXACT, (4,), (1.0,))
    gen = torch.Generator().manual_seed(3)
    out = loss(_batch(gen, torch.tensor([0]), torch.tensor([1]), torch.tensor([1, 1])))
    assert out.total.item() == pytest.approx(0.0, abs=1e-6)


def test_multitask_total_is_share_weighted_mean_and_reports_each_task():
    mt = MultiTaskLoss(EXACT, {"a": {4: 1.0}, "b": {4: 1.0}}, {"a": 3, "b": 1, "unused": 5})
    gen = torch.Generator().manual_seed(4)
    batches = {t: _batch(gen, torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([2, 3])) for t in "ab"}
    total, logs = mt(batches)
    assert total.item() == pytest.approx(0.75 * logs["a/loss"].item() + 0.25 * logs["b/loss"].item(), rel=1e-6)
    assert {"a/in_batch@4", "a/random@4", "a/scale", "b/loss"} <= set(logs)
    assert "sketch" not in " ".join(mt.state_dict())  # sketches never reach a checkpoint


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 2**40), min_size=1, max_size=200))
def test_count_min_sketch_never_undercounts(keys):
    sketch = CountMinSketch(width=16, depth=2)  # narrow: collisions are certain
    sketch.update(torch.tensor(keys))
    est = sketch(torch.tensor(sorted(set(keys))))
    truth = Counter(keys)
    assert all(e >= truth[k] for e, k in zip(est.counts.tolist(), sorted(set(keys))))
    assert est.total.item() == len(keys)


def test_wide_sketch_is_exact_and_reports_memory():
    sketch = CountMinSketch(width=2**16, depth=3)
    sketch.update(torch.tensor([7, 7, 7, 123456789012, 5]))
    assert sketch(torch.tensor([7, 123456789012, 5])).counts.tolist() == [3, 1, 1]
    assert sketch.memory_bytes == 3 * 2**16 * 8
    assert "memory=1.5 MiB" in repr(sketch)


def test_hash_bag_equals_naive_formula_and_zeroes_empty_bags():
    torch.manual_seed(0)
    bag = HashEmbeddingBag(num_ids=50, rows=7, dim=6, probes=2, seed=3)
    ids = torch.tensor([4, 4, 9, 49, 0, 9])
    offsets = torch.tensor([0, 3, 3, 5])  # bags: [4,4,9], [], [49,0], [9]
    out = bag(ids, offsets)
    rows = bag.probe(ids)
    for b, (s, e) in enumerate([(0, 3), (3, 3), (3, 5), (5, 6)]):
        if s == e:
            assert torch.all(out[b] == 0)
            continue
        naive = sum(bag.importance[t, k] * bag.table[rows[i, k]] for i, t in enumerate(ids.tolist())
                    if s <= i < e for k in range(2))
        torch.testing.assert_close(out[b], bag.norm(naive), rtol=1e-5, atol=1e-5)
    out.sum().backward()
    assert bag.importance.grad[[4, 9, 49, 0]].abs().sum() > 0 and bag.importance.grad[1].abs().sum() == 0


def test_hash_bag_probes_are_part_of_the_saved_state():
    a = HashEmbeddingBag(100, 10, 4, seed=1)
    b = HashEmbeddingBag(100, 10, 4, seed=2)
    assert {"hash_a", "hash_b"} <= set(a.state_dict())
    b.load_state_dict(a.state_dict())
    ids = torch.arange(100)
    assert torch.equal(a.probe(ids), b.probe(ids))


def test_lamb_moves_each_tensor_by_lr_times_its_norm():
    # LAMB's defining property: the first step (Adam direction ~ sign(g)) is rescaled per tensor by
    # the trust ratio ||w|| / ||update||, so every tensor moves by lr * ||w|| whatever its gradient scale.
    from omnisearchsage.trainer.lamb import Lamb

    torch.manual_seed(0)
    big, small = torch.nn.Parameter(torch.randn(20, 5) * 10), torch.nn.Parameter(torch.randn(7) * 0.1)
    opt = Lamb([big, small], lr=0.01, weight_decay=0.0)
    before = [big.detach().clone(), small.detach().clone()]
    (1000 * big.sum() + 0.001 * small.sum()).backward()
    opt.step()
    for p, b in zip((big, small), before):
        assert (p.detach() - b).norm().item() == pytest.approx(0.01 * b.norm().item(), rel=1e-3)
