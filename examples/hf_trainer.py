"""Two GLUE tasks with the Hugging Face Trainer and gradient surgery: change one class name.

    python -m examples.hf_trainer                       # SST-2 + MRPC, pcgrad, ~1 min on 2 cores
    python -m examples.hf_trainer --surgery upgrad --grad-accum 2 --bf16

A small byte-level encoder (embedding → 2-layer transformer, mean-pooled) is shared by one
classification head per task; every batch holds rows of both tasks. ``GradSurgeryTrainer`` is
``transformers.Trainer`` with ``surgery=``: the per-task losses come from the model output's
``losses`` mapping, and the logs carry the conflict statistics (``gradsurg/cos/sst2__mrpc`` …),
which ``--report-to tensorboard`` would plot. Data: ``../shared/data/glue`` (``--data-dir``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if not __package__:  # run as a file: its relative imports cannot work, say how to run it
    sys.exit("run this script as a module, from the repository root: python -m examples.hf_trainer")

import torch

from gradsurg.integrations.hf import GradSurgeryTrainer

from .mtl import data as mdata

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


class SharedEncoder(torch.nn.Module):
    """Bytes → shared transformer encoder → one linear head per task."""

    def __init__(self, tasks: list[str], vocab: int = 260, width: int = 64) -> None:
        super().__init__()
        self.tasks = tasks
        self.embed = torch.nn.Embedding(vocab, width)
        layer = torch.nn.TransformerEncoderLayer(width, nhead=4, dim_feedforward=2 * width, batch_first=True)
        self.encoder = torch.nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.heads = torch.nn.ModuleDict({t: torch.nn.Linear(width, 2) for t in tasks})

    def pooled(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.encoder(self.embed(ids), src_key_padding_mask=mask == 0)
        m = mask.unsqueeze(-1).to(h.dtype)
        return (h * m).sum(1) / m.sum(1).clamp(min=1)

    def forward(self, **batch: torch.Tensor) -> dict:
        losses, logits = {}, {}
        for t in self.tasks:
            out = self.heads[t](self.pooled(batch[f"{t}_input_ids"], batch[f"{t}_attention_mask"]))
            logits[t] = out
            losses[t] = torch.nn.functional.cross_entropy(out, batch[f"{t}_labels"])
        return {"losses": losses, "logits": logits}


class Paired(torch.utils.data.Dataset):
    """Row i holds row i (mod size) of every task, so each batch feeds every task."""

    def __init__(self, rows: dict[str, list[dict]]) -> None:
        self.rows = rows
        self.size = max(len(r) for r in rows.values())

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> dict[str, dict]:
        return {t: r[i % len(r)] for t, r in self.rows.items()}


def collate(batch: list[dict[str, dict]], pad_id: int) -> dict[str, torch.Tensor]:
    out = {}
    for t in batch[0]:
        for key, value in mdata.collate_classification([b[t] for b in batch], pad_id).items():
            out[f"{t}_{key}"] = value
    return out


def accuracy(model: SharedEncoder, rows: dict[str, list[dict]], pad_id: int) -> dict[str, float]:
    model.eval()
    scores = {}
    with torch.no_grad():
        for t, task_rows in rows.items():
            batch = mdata.collate_classification(task_rows, pad_id)
            pred = model.heads[t](model.pooled(batch["input_ids"], batch["attention_mask"])).argmax(-1)
            scores[t] = float((pred == batch["labels"]).float().mean())
    return scores


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Train and return the validation accuracy per task."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="sst2,mrpc", help="comma-separated GLUE tasks")
    parser.add_argument("--surgery", default="pcgrad")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--max-train", type=int, default=2000)
    parser.add_argument("--max-eval", type=int, default=200)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--output-dir", type=Path, default=Path("runs/hf_trainer"))
    parser.add_argument("--report-to", default="none")
    args = parser.parse_args(argv)
    import transformers

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    tok = mdata.ByteTokenizer()
    train, evals = {}, {}
    for t in tasks:
        tr, ev = mdata.load_glue(t, args.data_dir, args.max_train, args.max_eval, seed=0)
        train[t] = mdata.encode_classification(tr, t, tok, 96)
        evals[t] = mdata.encode_classification(ev, t, tok, 96)
    torch.manual_seed(0)
    model = SharedEncoder(tasks)
    targs = transformers.TrainingArguments(
        output_dir=str(args.output_dir),
        max_steps=args.steps,
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=args.grad_accum,
        learning_rate=1e-3,
        warmup_steps=args.steps // 10,
        logging_steps=max(1, args.steps // 6),
        save_strategy="no",
        report_to=args.report_to,
        bf16=args.bf16,
        use_cpu=not torch.cuda.is_available(),
        remove_unused_columns=False,
        disable_tqdm=False,
        seed=0,
    )
    trainer = GradSurgeryTrainer(
        model=model,
        args=targs,
        train_dataset=Paired(train),
        surgery=args.surgery,
        data_collator=lambda b: collate(b, tok.pad_token_id),
    )
    trainer.train()
    for entry in trainer.state.log_history:
        cos = {k.split("/")[-1]: round(v, 3) for k, v in entry.items() if k.startswith("gradsurg/cos/")}
        if cos:
            print(
                f"step {entry['step']}: loss {entry['loss']:.4f}, cosine {cos}, "
                f"conflicts {entry.get('gradsurg/conflicts')}"
            )
    scores = accuracy(model, evals, tok.pad_token_id)
    print("validation accuracy:", {t: round(100 * s, 1) for t, s in scores.items()})
    return scores


if __name__ == "__main__":
    main()
