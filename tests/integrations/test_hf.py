"""GradSurgeryTrainer: a Hugging Face Trainer whose steps are gradient-surgery steps."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="transformers is not installed")
pytest.importorskip("accelerate", reason="accelerate is not installed")

from _tiny import TASKS, Rows, TwoHeadModel, big_batch_update, training_args

from gradsurg.integrations.hf import GradSurgeryTrainer


def _args(tmp_path, **kw):
    return training_args(transformers, tmp_path, **kw)


def test_accumulation_equals_the_big_batch_surgery(tmp_path):
    rows = Rows(8)
    model = TwoHeadModel()
    trainer = GradSurgeryTrainer(
        model=model,
        args=_args(tmp_path, gradient_accumulation_steps=2, max_steps=1),
        train_dataset=rows,
        surgery="mgda",
    )
    trainer.train()
    # One step consumed all 8 rows (2 micro-batches of 4): the surgery of the whole batch.
    for got, want in zip(model.parameters(), big_batch_update("mgda", 0.1, rows)):
        torch.testing.assert_close(got.detach(), want, rtol=1e-5, atol=1e-6)
    assert trainer.last_surgery_stats.micro_batches == 2


def test_logs_carry_the_conflict_statistics(tmp_path):
    trainer = GradSurgeryTrainer(
        model=TwoHeadModel(), args=_args(tmp_path, max_steps=3), train_dataset=Rows(12), surgery="pcgrad"
    )
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 3
    for entry in logs:
        for task in TASKS:
            assert f"gradsurg/loss/{task}" in entry and f"gradsurg/weight/{task}" in entry
            assert f"gradsurg/norm/{task}" in entry
        assert "gradsurg/cos/sst2__aeslc" in entry and "gradsurg/conflicts" in entry


def test_checkpoint_resume_continues_bit_identically(tmp_path):
    def run(out, max_steps, resume=None):
        model = TwoHeadModel()
        trainer = GradSurgeryTrainer(
            model=model,
            args=_args(
                tmp_path,
                output_dir=str(out),
                max_steps=max_steps,
                save_strategy="steps",
                save_steps=2,
                optim="adamw_torch",
                learning_rate=1e-2,
            ),
            train_dataset=Rows(16),
            surgery="gradvac",  # gradvac: EMA targets and a generator in its state
        )
        trainer.train(resume_from_checkpoint=resume)
        return [p.detach().clone() for p in model.parameters()]

    straight = run(tmp_path / "a", 4)
    run(tmp_path / "b", 2)
    resumed = run(tmp_path / "c", 4, resume=str(tmp_path / "b" / "checkpoint-2"))
    for a, b in zip(straight, resumed):
        assert torch.equal(a, b)


def test_bf16_on_cpu_runs(tmp_path):
    model = TwoHeadModel()
    trainer = GradSurgeryTrainer(
        model=model, args=_args(tmp_path, max_steps=2, bf16=True), train_dataset=Rows(8), surgery="upgrad"
    )
    trainer.train()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert trainer.last_surgery_stats is not None


def test_task_losses_function_and_clear_errors(tmp_path):
    class Plain(TwoHeadModel):
        def forward(self, x, y):
            return {"logits": self.trunk(x)}

    def task_losses(model, inputs):
        h = model.trunk(inputs["x"])
        return {
            t: ((head(h).squeeze(-1) - inputs["y"][:, i]) ** 2).mean()
            for i, (t, head) in enumerate(model.heads.items())
        }

    trainer = GradSurgeryTrainer(
        model=Plain(), args=_args(tmp_path, max_steps=1), train_dataset=Rows(8), task_losses=task_losses
    )
    trainer.train()
    assert trainer.last_surgery_stats.task_names == TASKS
    bare = GradSurgeryTrainer(model=Plain(), args=_args(tmp_path, max_steps=1), train_dataset=Rows(8))
    with pytest.raises(ValueError, match="task_losses: the model output has no 'losses' mapping"):
        bare.train()
    with pytest.raises(TypeError, match="task_losses: expected a function"):
        GradSurgeryTrainer(model=Plain(), args=_args(tmp_path, max_steps=1), train_dataset=Rows(8), task_losses=3)
