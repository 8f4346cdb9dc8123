"""gradsurg.data: task-homogeneous batches from several datasets."""

from __future__ import annotations

import collections

import pytest
import torch
from torch.utils.data import DataLoader

from gradsurg.data import MultiTaskBatchSampler, MultiTaskCollator, MultiTaskDataset

SIZES = {"cls": 10, "sum": 4, "tiny": 3}


def _dataset():
    return MultiTaskDataset({t: [{"x": torch.tensor([float(i)])} for i in range(n)] for t, n in SIZES.items()})


def _tasks(sampler, dataset):
    return [dataset.locate(batch[0])[0] for batch in sampler]


def test_every_batch_holds_one_task_and_the_collator_names_it():
    dataset = _dataset()
    sampler = MultiTaskBatchSampler(dataset.sizes, 2, mixing="proportional", seed=1)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=MultiTaskCollator())
    for indices, batch in zip(sampler, loader):
        tasks = {dataset.locate(i)[0] for i in indices}
        assert tasks == {batch["task"]}
        assert batch["x"].shape[0] == len(indices)


def test_round_robin_alternates_and_every_window_holds_every_task():
    dataset = _dataset()
    sampler = MultiTaskBatchSampler(dataset.sizes, 2, mixing="round_robin")
    tasks = _tasks(sampler, dataset)
    assert len(tasks) == 3 * 5  # the largest task: 10 examples in batches of 2
    for start in range(0, len(tasks), 3):
        assert tasks[start : start + 3] == ["cls", "sum", "tiny"]


def test_proportional_takes_each_example_once_per_epoch():
    dataset = _dataset()
    sampler = MultiTaskBatchSampler(dataset.sizes, 3, mixing="proportional", seed=2)
    seen = [i for batch in sampler for i in batch]
    assert sorted(seen) == list(range(len(dataset)))
    counts = collections.Counter(_tasks(sampler, dataset))
    assert counts == {"cls": 4, "sum": 2, "tiny": 1}


def test_temperature_mixing_follows_the_scaled_sizes():
    sizes = {"big": 10_000, "small": 100}
    sampler = MultiTaskBatchSampler(sizes, 1, mixing="temperature", temperature=2.0, seed=0)
    schedule = sampler.task_schedule()
    share = schedule.count(1) / len(schedule)
    expected = 100**0.5 / (10_000**0.5 + 100**0.5)  # ∝ n^(1/τ)
    assert abs(share - expected) < 0.01
    uniform = MultiTaskBatchSampler(sizes, 1, mixing="temperature", temperature=1e9, seed=0).task_schedule()
    assert abs(uniform.count(1) / len(uniform) - 0.5) < 0.02


def test_deterministic_by_seed_and_epoch():
    a = MultiTaskBatchSampler(SIZES, 2, mixing="proportional", seed=5)
    b = MultiTaskBatchSampler(SIZES, 2, mixing="proportional", seed=5)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    c = MultiTaskBatchSampler(SIZES, 2, mixing="proportional", seed=6)
    assert list(c) != first


def test_state_dict_resumes_exactly():
    sampler = MultiTaskBatchSampler(SIZES, 2, mixing="temperature", seed=3)
    sampler.set_epoch(2)
    full = list(sampler)
    state = sampler.state_dict(batches_seen=4)
    resumed = MultiTaskBatchSampler(SIZES, 2, mixing="temperature", seed=3)
    resumed.load_state_dict(state)
    assert list(resumed) == full[4:]
    assert list(resumed) == full  # the next pass is the whole epoch again
    with pytest.raises(ValueError, match="state: saved with seed 3"):
        MultiTaskBatchSampler(SIZES, 2, seed=4).load_state_dict(state)


@pytest.mark.parametrize("mixing", ["round_robin", "proportional", "temperature"])
def test_ranks_see_the_same_task_at_the_same_step_and_split_its_batch(mixing):
    """Rank r's batch is the r-th slice of the batch one process would draw with the global
    batch size: the same task everywhere at every step, and between them the whole batch."""
    ranks = [MultiTaskBatchSampler(SIZES, 2, mixing=mixing, seed=7, num_replicas=2, rank=r) for r in range(2)]
    single = list(MultiTaskBatchSampler(SIZES, 4, mixing=mixing, seed=7))
    dataset = _dataset()
    per_rank = [list(s) for s in ranks]
    assert len(per_rank[0]) == len(per_rank[1]) == len(single)
    for b0, b1, whole in zip(*per_rank, single):
        assert dataset.locate(b0[0])[0] == dataset.locate(b1[0])[0] == dataset.locate(whole[0])[0]
        if len(whole) > 1:
            assert b0 + b1 == whole


def test_per_task_batch_sizes_and_collators():
    dataset = _dataset()
    sampler = MultiTaskBatchSampler(dataset.sizes, {"cls": 5, "sum": 2, "tiny": 1}, mixing="round_robin")
    collate = MultiTaskCollator({"sum": lambda items: {"n": len(items)}})
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate)
    sizes = {batch["task"]: batch["x"].shape[0] if "x" in batch else batch["n"] for batch in loader}
    assert sizes == {"cls": 5, "sum": 2, "tiny": 1}


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"mixing": "random"}, "mixing"),
        ({"temperature": 0}, "temperature"),
        ({"num_replicas": 2, "rank": 2}, "rank"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": {"cls": 2}}, "batch_size"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, argument):
    kwargs = {"batch_size": 2, **kwargs}
    with pytest.raises(ValueError, match=rf"^{argument}: "):
        MultiTaskBatchSampler(SIZES, **kwargs)


def test_bad_datasets_and_batches():
    with pytest.raises(ValueError, match=r"^datasets: "):
        MultiTaskDataset({})
    with pytest.raises(ValueError, match=r"^datasets\['e'\]: is empty"):
        MultiTaskDataset({"e": []})
    with pytest.raises(ValueError, match=r"^batch: a task-homogeneous batch holds one task"):
        MultiTaskCollator()([("a", {"x": torch.ones(1)}), ("b", {"x": torch.ones(1)})])
    with pytest.raises(ValueError, match=r"^sizes: "):
        MultiTaskBatchSampler({}, 2)
