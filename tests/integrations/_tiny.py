"""A tiny two-head model and data for the trainer integrations."""

from __future__ import annotations

import torch

TASKS = ("sst2", "aeslc")


class TwoHeadModel(torch.nn.Module):
    """A shared trunk with two regression heads; forward returns ``{"losses": {...}}``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.trunk = torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.Tanh(), torch.nn.Linear(12, 12))
        self.heads = torch.nn.ModuleDict({t: torch.nn.Linear(12, 1) for t in TASKS})

    def forward(self, x, y):
        h = self.trunk(x)
        return {
            "losses": {
                t: ((head(h).squeeze(-1) - y[:, i]) ** 2).mean() for i, (t, head) in enumerate(self.heads.items())
            }
        }


class Rows(torch.utils.data.Dataset):
    """Rows {x, y} whose two targets pull the trunk in opposite directions."""

    def __init__(self, n: int = 8, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 6, generator=gen)
        self.y = torch.randn(n, 2, generator=gen) * torch.tensor([1.0, -1.0])

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "y": self.y[i]}


def big_batch_update(method: str, lr: float, rows: Rows) -> list[torch.Tensor]:
    """Parameters after one SGD step of the surgery on the whole data set as one batch."""
    from gradsurg import GradSurgery

    model = TwoHeadModel()
    opt = GradSurgery(torch.optim.SGD(model.parameters(), lr=lr), method=method)
    opt.backward(model(rows.x, rows.y)["losses"])
    opt.step()
    return [p.detach().clone() for p in model.parameters()]


def training_args(transformers, tmp_path, **kw):
    """The tests' TrainingArguments: CPU, SGD at a constant rate, no clipping, no saving, a log
    every step, overridden by ``kw``."""
    base = {
        "output_dir": str(tmp_path / "out"),
        "per_device_train_batch_size": 4,
        "learning_rate": 0.1,
        "optim": "sgd",
        "lr_scheduler_type": "constant",
        "max_grad_norm": 0.0,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": [],
        "use_cpu": True,
        "remove_unused_columns": False,
        "seed": 0,
        "disable_tqdm": True,
    }
    base.update(kw)
    return transformers.TrainingArguments(**base)
