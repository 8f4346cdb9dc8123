"""GradSurgeryTrainer the LLM way: one task per batch (``train_datasets={task: dataset}``), one
surgery per accumulation window."""

from __future__ import annotations

import copy

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="transformers is not installed")
pytest.importorskip("accelerate", reason="accelerate is not installed")

from _tiny import TASKS, Rows, TwoHeadModel, training_args

import gradsurg
from gradsurg import GradSurgery
from gradsurg.data import MultiTaskBatchSampler, MultiTaskCollator, MultiTaskDataset
from gradsurg.integrations.hf import GradSurgeryTrainer


def task_loss(model, task, inputs):
    """The loss of one task's batch: its head on the shared trunk, its own target column."""
    h = model.trunk(inputs["x"])
    column = TASKS.index(task)
    return ((model.heads[task](h).squeeze(-1) - inputs["y"][:, column]) ** 2).mean()


def _datasets():
    return {"sst2": Rows(12, seed=1), "aeslc": Rows(8, seed=2)}


def _args(tmp_path, **kw):
    return training_args(transformers, tmp_path, **kw)


def _windows(batch_size, accumulation, steps, seed=0):
    """The batches the trainer's sampler gives, as (task, rows) per micro-batch, per step."""
    dataset = MultiTaskDataset(_datasets())
    sampler = MultiTaskBatchSampler(dataset.sizes, batch_size, seed=seed)
    collate = MultiTaskCollator()
    batches = [collate([dataset[i] for i in indices]) for indices in sampler]
    return [batches[s * accumulation : (s + 1) * accumulation] for s in range(steps)]


class PlainTaskTrainer(transformers.Trainer):
    """A plain ``Trainer`` on the same task-homogeneous batches: ``loss.backward()``."""

    def get_train_dataloader(self):
        dataset = MultiTaskDataset(_datasets())
        sampler = MultiTaskBatchSampler(dataset.sizes, self.args.per_device_train_batch_size, seed=self.args.seed)
        loader = self.accelerator.prepare(
            torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=MultiTaskCollator())
        )
        loader.batch_sampler.num_processes, loader.batch_sampler.process_index = 1, 0
        return loader

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        task = inputs.pop("task")
        loss = task_loss(model, task, inputs)
        return (loss, None) if return_outputs else loss


def test_sum_equals_a_plain_trainer_on_the_same_sampler(tmp_path):
    ours, plain = TwoHeadModel(), TwoHeadModel()
    GradSurgeryTrainer(
        model=ours,
        args=_args(tmp_path, max_steps=3, gradient_accumulation_steps=2),
        train_datasets=_datasets(),
        task_losses=task_loss,
        surgery="sum",
    ).train()
    PlainTaskTrainer(model=plain, args=_args(tmp_path, max_steps=3, gradient_accumulation_steps=2)).train()
    for a, b in zip(ours.parameters(), plain.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", ["upgrad", "mgda", "pcgrad", "nash_mtl"])
def test_each_window_is_one_surgery_of_its_summed_task_losses(tmp_path, name):
    """Two steps; each equals GradSurgery on the window's task losses summed (each divided by
    the two micro-batches, as Trainer does), written out here by hand."""
    model = TwoHeadModel()
    reference = copy.deepcopy(model)
    trainer = GradSurgeryTrainer(
        model=model,
        args=_args(tmp_path, max_steps=2),  # gradient_accumulation_steps becomes the 2 tasks
        train_datasets=_datasets(),
        task_losses=task_loss,
        surgery=name,
    )
    assert trainer.args.gradient_accumulation_steps == 2
    trainer.train()
    opt = GradSurgery(torch.optim.SGD(reference.parameters(), lr=0.1), method=name)
    for window in _windows(4, 2, 2):
        opt.zero_grad()
        losses = {}
        for batch in window:
            losses[batch["task"]] = task_loss(reference, batch["task"], batch) / 2
        opt.backward({t: losses[t] for t in TASKS})
        opt.step()
    for a, b in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert trainer.last_surgery_stats.task_names == TASKS
    assert trainer.last_surgery_stats.task_micro_batches == (1, 1)


def _resume_run(tmp_path, out, max_steps, name, resume=None, tasks=True):
    model = TwoHeadModel()
    data = {"train_datasets": _datasets(), "task_losses": task_loss} if tasks else {"train_dataset": Rows(16)}
    trainer = GradSurgeryTrainer(
        model=model,
        args=_args(
            tmp_path, output_dir=str(out), max_steps=max_steps, save_strategy="steps", save_steps=2,
            optim="adamw_torch", learning_rate=1e-2,
        ),
        surgery=name,
        surgery_kwargs=None if tasks else {"tasks": list(TASKS)},  # uw, imtl_l by name
        **data,
    )
    trainer.train(resume_from_checkpoint=resume)
    return [p.detach().clone() for p in model.parameters()], trainer.surgery_optimizer.method.state_dict()


@pytest.mark.parametrize(
    "name, tasks", [("gradvac", True), ("nash_mtl", True), ("upgrad", True), ("uw", False), ("imtl_l", False)]
)
def test_resume_from_a_checkpoint_is_bit_exact(tmp_path, name, tasks):
    def run(out, max_steps, resume=None):
        return _resume_run(tmp_path, out, max_steps, name, resume, tasks)

    straight, method_a = run(tmp_path / "a", 4)
    run(tmp_path / "b", 2)
    resumed, method_b = run(tmp_path / "c", 4, resume=str(tmp_path / "b" / "checkpoint-2"))
    for a, b in zip(straight, resumed):
        assert torch.equal(a, b)
    assert repr(method_a) == repr(method_b)


def test_loss_space_methods_on_task_homogeneous_batches_are_refused(tmp_path):
    # A loss weighting needs every task's loss of the window before any gradient: it cannot
    # accumulate one task per micro-batch (an error, never a partial update).
    with pytest.raises(ValueError, match=r"^sync: uw weighs the losses"):
        _resume_run(tmp_path, tmp_path / "x", 1, "uw")



def test_evaluate_reports_each_task(tmp_path):
    def mse_metric(model, dataset):
        return {"rows": float(len(dataset))}

    trainer = GradSurgeryTrainer(
        model=TwoHeadModel(),
        args=_args(tmp_path, max_steps=1, per_device_eval_batch_size=3),
        train_datasets=_datasets(),
        eval_datasets={"sst2": Rows(5, seed=3), "aeslc": Rows(4, seed=4)},
        task_losses=task_loss,
        task_metrics={"sst2": mse_metric},
        surgery="upgrad",
    )
    trainer.train()
    metrics = trainer.evaluate()
    assert set(metrics) == {"eval_sst2_loss", "eval_sst2_rows", "eval_aeslc_loss"}
    assert metrics["eval_sst2_rows"] == 5.0
    model = trainer.model
    rows = Rows(4, seed=4)
    with torch.no_grad():
        want = float(task_loss(model, "aeslc", {"x": rows.x, "y": rows.y}))
    assert metrics["eval_aeslc_loss"] == pytest.approx(want, rel=1e-6)


def test_task_datasets_errors_name_the_argument(tmp_path):
    with pytest.raises(ValueError, match=r"^task_losses: with train_datasets"):
        GradSurgeryTrainer(model=TwoHeadModel(), args=_args(tmp_path), train_datasets=_datasets())
    with pytest.raises(ValueError, match=r"^train_datasets: pass either"):
        GradSurgeryTrainer(
            model=TwoHeadModel(), args=_args(tmp_path), train_datasets=_datasets(), train_dataset=Rows(4),
            task_losses=task_loss,
        )
    with pytest.raises(ValueError, match=r"^gradient_accumulation_steps: round-robin mixing"):
        GradSurgeryTrainer(
            model=TwoHeadModel(), args=_args(tmp_path, gradient_accumulation_steps=3),
            train_datasets=_datasets(), task_losses=task_loss,
        )
    with pytest.raises(ValueError, match=r"^mixing: "):
        GradSurgeryTrainer(
            model=TwoHeadModel(), args=_args(tmp_path), train_datasets=_datasets(), task_losses=task_loss,
            mixing="zipf",
        )


def test_methods_needing_the_task_count_are_built_by_name_from_declared_tasks(tmp_path):
    trainer = GradSurgeryTrainer(
        model=TwoHeadModel(),
        args=_args(tmp_path, max_steps=1),
        train_dataset=Rows(8),
        surgery="uw",
        surgery_kwargs={"tasks": list(TASKS)},
    )
    trainer.train()
    assert isinstance(trainer.surgery_optimizer.method, gradsurg.methods.UW)


def test_the_trainer_writes_a_trace_on_request_and_resume_continues_it(tmp_path):
    path = tmp_path / "trace.jsonl"

    def run(out, max_steps, resume=None):
        trainer = GradSurgeryTrainer(
            model=TwoHeadModel(),
            args=_args(tmp_path, output_dir=str(out), max_steps=max_steps, save_strategy="steps", save_steps=2),
            train_datasets=_datasets(),
            task_losses=task_loss,
            surgery="mean",
            surgery_kwargs={"trace": path},
        )
        trainer.train(resume_from_checkpoint=resume)

    run(tmp_path / "a", 2)
    run(tmp_path / "b", 3, resume=str(tmp_path / "a" / "checkpoint-2"))
    steps = gradsurg.read_trace(path)
    assert [s.step for s in steps] == [1, 2, 3]
    assert all(s.tasks == TASKS and s.task_micro_batches == (1, 1) for s in steps)
