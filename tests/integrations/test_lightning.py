"""GradSurgeryModule: Lightning manual optimisation with gradient surgery."""

from __future__ import annotations

import pytest
import torch

pl = pytest.importorskip("lightning.pytorch", reason="lightning is not installed")

from _tiny import TASKS, Rows, TwoHeadModel, big_batch_update

from gradsurg import GradSurgery
from gradsurg.integrations.lightning import GradSurgeryModule


class MultiTask(GradSurgeryModule):
    def __init__(self, method="pcgrad", lr=0.1, **kwargs):
        super().__init__(**kwargs)
        self.net = TwoHeadModel()
        self.method, self.lr = method, lr

    def task_losses(self, batch, batch_idx):
        return self.net(batch["x"], batch["y"])["losses"]

    def configure_optimizers(self):
        return GradSurgery(torch.optim.SGD(self.parameters(), lr=self.lr), method=self.method)


def _fit(module, rows, max_steps, **kwargs):
    trainer = pl.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        **kwargs,
    )
    loader = torch.utils.data.DataLoader(rows, batch_size=4, shuffle=False)
    trainer.fit(module, loader)
    return trainer


def test_accumulation_equals_the_big_batch_surgery():
    rows = Rows(8)
    module = MultiTask("mgda", accumulate_grad_batches=2)
    _fit(module, rows, max_steps=1)
    for got, want in zip(module.net.parameters(), big_batch_update("mgda", 0.1, rows)):
        torch.testing.assert_close(got.detach(), want, rtol=1e-5, atol=1e-6)
    assert module.last_surgery_stats.micro_batches == 2


def test_trains_and_logs_the_conflict_statistics():
    module = MultiTask("upgrad")
    before = [p.detach().clone() for p in module.parameters()]
    trainer = _fit(module, Rows(12), max_steps=3, precision="bf16-mixed")
    assert any(not torch.equal(a, b) for a, b in zip(before, module.parameters()))
    metrics = trainer.callback_metrics
    for task in TASKS:
        assert f"gradsurg/loss/{task}" in metrics and f"gradsurg/norm/{task}" in metrics
    assert "gradsurg/cos/sst2__aeslc" in metrics and "gradsurg/conflicts" in metrics


def test_module_arguments_are_checked_and_the_optimizer_must_be_a_gradsurgery():
    with pytest.raises(ValueError, match="accumulate_grad_batches"):
        MultiTask(accumulate_grad_batches=0)

    class Plain(MultiTask):
        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    with pytest.raises(TypeError, match=r"configure_optimizers: expected a gradsurg\.GradSurgery"):
        _fit(Plain(), Rows(8), max_steps=1)


class OneTaskPerBatch(MultiTask):
    """Task-homogeneous batches (gradsurg.data): each batch's loss is its own task's."""

    def task_losses(self, batch, batch_idx):
        task = batch["task"]
        h = self.net.trunk(batch["x"])
        column = TASKS.index(task)
        return {task: ((self.net.heads[task](h).squeeze(-1) - batch["y"][:, column]) ** 2).mean()}


def test_accumulate_grad_batches_over_task_homogeneous_batches_is_one_surgery_per_window():
    """Windows of two batches, one task each: every step equals GradSurgery on the window's task
    losses (each divided by the two batches, as the module does), written out here by hand."""
    from gradsurg.data import MultiTaskBatchSampler, MultiTaskCollator, MultiTaskDataset

    dataset = MultiTaskDataset({"sst2": Rows(8, seed=1), "aeslc": Rows(8, seed=2)})
    sampler = MultiTaskBatchSampler(dataset.sizes, 4, seed=0)
    collate = MultiTaskCollator()
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate)
    module = OneTaskPerBatch("upgrad", accumulate_grad_batches=2)
    reference = TwoHeadModel()
    reference.load_state_dict(module.net.state_dict())
    trainer = pl.Trainer(
        max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(module, loader)
    opt = GradSurgery(torch.optim.SGD(reference.parameters(), lr=0.1), method="upgrad")
    batches = [collate([dataset[i] for i in indices]) for indices in sampler]
    for window in (batches[0:2], batches[2:4]):
        opt.zero_grad()
        losses = {}
        for batch in window:
            h = reference.trunk(batch["x"])
            column = TASKS.index(batch["task"])
            losses[batch["task"]] = ((reference.heads[batch["task"]](h).squeeze(-1) - batch["y"][:, column]) ** 2).mean() / 2
        opt.backward({t: losses[t] for t in TASKS})
        opt.step()
    for got, want in zip(module.net.parameters(), reference.parameters()):
        torch.testing.assert_close(got.detach(), want.detach(), rtol=1e-5, atol=1e-6)
    assert module.last_surgery_stats.task_micro_batches == (1, 1)


def test_the_module_writes_a_trace_on_request(tmp_path):
    path = tmp_path / "trace.jsonl"

    class Traced(MultiTask):
        def configure_optimizers(self):
            return GradSurgery(torch.optim.SGD(self.parameters(), lr=self.lr), method=self.method, trace=path)

    _fit(Traced("upgrad"), Rows(12), max_steps=3)
    import gradsurg

    assert [s.step for s in gradsurg.read_trace(path)] == [1, 2, 3]
