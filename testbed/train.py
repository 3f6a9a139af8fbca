"""Train the bundled CPU model from scratch.

    python -m testbed.train --out DIR --minutes M --seed S [--steps N]
    python -m testbed.train --out DIR2 --init DIR --steps N --p-solution P  # stage 2
    python -m testbed.train ... --p-repair R --p-multi-turn M  # another example mix

A small `LlamaForCausalLM` (standard architecture, so transformers, peft and vLLM load it) learns
the task family of `tasks.py` from the example stream of `corpus.py`: AdamW, linear warmup then
cosine decay, packed rows. The loss is next-token cross-entropy on the answer tokens plus 0.3 x
that on the prompt tokens: predicting a feedback's Expected lists from its Inputs exercises the
very skill the self-teacher needs (inferring a hidden constant from one test and applying it to
the next). In a 300-step A/B on this machine it raised the teacher lift (x0.39 -> x0.68, both
still below 1 that early) and lowered the answer loss (0.100 -> 0.090).

Everything is seeded. The run length is a number of optimizer steps; `--minutes` only picks that
number, by timing the first steps on this machine, and the resolved `--steps` is written to
DIR/README.md so that a rerun with it repeats the same schedule and data (bit-identical on the
same machine and thread count).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from .corpus import IGNORE_INDEX, Batch, CorpusConfig, batches
from .diagnostics import EvalReport, evaluate
from .tokenizer import build_tokenizer


@dataclass(frozen=True)
class ModelShape:
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 8
    num_kv_heads: int = 4
    intermediate_size: int = 688


@dataclass(frozen=True)
class TrainConfig:
    """One training run. `steps` wins over `minutes` when given."""

    seed: int = 0
    init: Path | None = None  # continue from this checkpoint instead of a fresh model
    minutes: float = 37.0  # wall-clock target, resolved into a step count after calibration
    steps: int | None = None
    batch_size: int = 8  # packed rows per optimizer step
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    shape: ModelShape = field(default_factory=ModelShape)
    lr: float = 2e-3
    min_lr_ratio: float = 0.1  # cosine decays to lr x this
    warmup_steps: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    prompt_loss_weight: float = 0.3  # weight of next-token loss on prompt tokens (0 = answers only)
    calibration_steps: int = 20  # steps timed to turn `minutes` into `steps`
    log_every: int = 50
    threads: int = 2

    def __post_init__(self) -> None:
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if self.minutes <= 0:
            raise ValueError(f"minutes must be positive, got {self.minutes}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")


@dataclass
class TrainSummary:
    steps: int
    wall_s: float
    final_loss: float  # mean answer-token loss over the last `log_every` steps
    curve: list[tuple[int, float]]  # (step, mean answer loss since the previous point)
    n_params: int


def build_model(
    shape: ModelShape, tokenizer: PreTrainedTokenizerBase, seed: int
) -> LlamaForCausalLM:
    """A freshly initialised model (seeded) whose special ids match the tokenizer."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden_size,
        num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_heads,
        num_key_value_heads=shape.num_kv_heads,
        intermediate_size=shape.intermediate_size,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        pad_token_id=config.pad_token_id, eos_token_id=config.eos_token_id
    )
    return model


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warmup over `warmup` steps, then cosine from 1 down to `min_ratio` at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def batch_losses(model: LlamaForCausalLM, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean next-token loss on answer tokens and on prompt tokens, packed rows kept apart by
    their restarting position ids (attention_mask=None makes transformers build the
    block-diagonal mask from them)."""
    logits = model(
        input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False
    ).logits[:, :-1]  # (B, T-1, V)
    targets = batch.input_ids[:, 1:]  # (B, T-1)
    nll = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")
    nll = nll.view_as(targets)
    answer = batch.labels[:, 1:] != IGNORE_INDEX
    # a prompt target must belong to the same example as its context: not a row's first token
    prompt = batch.in_prompt[:, 1:] & (batch.position_ids[:, 1:] > 0)
    answer_loss = (nll * answer).sum() / answer.sum().clamp(min=1)
    prompt_loss = (nll * prompt).sum() / prompt.sum().clamp(min=1)
    return answer_loss, prompt_loss


def _optimizer(model: LlamaForCausalLM, config: TrainConfig) -> torch.optim.AdamW:
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]  # norms
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.95), eps=1e-8)


def train(
    config: TrainConfig, log: Callable[[str], None] = print
) -> tuple[LlamaForCausalLM, TrainSummary]:
    """Train a fresh model, or continue `config.init`; returns it with the run's summary."""
    torch.set_num_threads(config.threads)
    tokenizer = build_tokenizer()
    if config.init is not None:
        model = LlamaForCausalLM.from_pretrained(config.init, local_files_only=True)
    else:
        model = build_model(config.shape, tokenizer, config.seed)
    model.train()
    optimizer = _optimizer(model, config)
    data = batches(config.corpus, tokenizer, config.batch_size)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {n_params:,} parameters; config: {asdict(config)}")
    total = config.steps or 10**9
    started = time.perf_counter()
    curve, window = [], []
    step = 0
    while step < total:
        if config.steps is None and step == config.calibration_steps:
            total = _resolve_steps(config, step, time.perf_counter() - started)
            log(f"--minutes {config.minutes:g} resolved to --steps {total}")
        for group in optimizer.param_groups:
            group["lr"] = config.lr * lr_factor(
                step, total, config.warmup_steps, config.min_lr_ratio
            )
        answer_loss, prompt_loss = batch_losses(model, next(data))
        loss = answer_loss + config.prompt_loss_weight * prompt_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        window.append(answer_loss.item())
        step += 1
        if step % config.log_every == 0 or step == total:
            curve.append((step, sum(window) / len(window)))
            elapsed = time.perf_counter() - started
            log(f"step {step}/{total} answer_loss {curve[-1][1]:.4f} "
                f"prompt_loss {prompt_loss.item():.4f} elapsed {elapsed:.0f}s")  # fmt: skip
            window = []
    model.eval()
    wall_s = time.perf_counter() - started
    return model, TrainSummary(step, wall_s, curve[-1][1], curve, n_params)


def _resolve_steps(config: TrainConfig, done: int, elapsed_s: float) -> int:
    # the first steps are slower (allocator warm-up), so this errs on the short side
    return max(done + 1, int(config.minutes * 60 / (elapsed_s / done)))


def save(model: LlamaForCausalLM, out_dir: Path, context: int) -> None:
    """The checkpoint as transformers writes it: config, float32 safetensors, tokenizer.

    `max_position_embeddings` is set to `context`, the row length the model was trained on:
    positions beyond it were never seen, so callers (multi-turn) must keep prompts within it.
    Rotary embeddings do not depend on it, so the weights are the same either way."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.config.max_position_embeddings = context
    model.save_pretrained(out_dir, safe_serialization=True)
    build_tokenizer().save_pretrained(str(out_dir))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="checkpoint folder to write")
    parser.add_argument("--minutes", type=float, default=37.0, help="wall-clock target")
    parser.add_argument("--steps", type=int, default=None, help="exact step count (wins)")
    parser.add_argument("--seed", type=int, default=0, help="model init and data seed")
    parser.add_argument("--init", type=Path, default=None, help="checkpoint to continue from")
    parser.add_argument("--lr", type=float, default=TrainConfig.lr, help="peak learning rate")
    parser.add_argument("--warmup-steps", type=int, default=TrainConfig.warmup_steps)
    parser.add_argument(
        "--p-solution",
        type=float,
        default=CorpusConfig.p_solution,
        help="share of solution-in-context examples",
    )
    parser.add_argument(
        "--p-repair", type=float, default=CorpusConfig.p_repair, help="share of repair examples"
    )
    parser.add_argument(
        "--p-multi-turn",
        type=float,
        default=CorpusConfig.p_multi_turn,
        help="share of multi-turn examples",
    )
    parser.add_argument("--no-eval", action="store_true", help="skip the diagnostics")
    args = parser.parse_args(argv)
    config = TrainConfig(
        seed=args.seed,
        init=args.init,
        minutes=args.minutes,
        steps=args.steps,
        lr=args.lr,
        warmup_steps=args.warmup_steps,
    )
    corpus = replace(
        config.corpus,
        seed=config.seed,
        p_solution=args.p_solution,
        p_repair=args.p_repair,
        p_multi_turn=args.p_multi_turn,
    )
    config = replace(config, corpus=corpus)
    model, summary = train(config, log=lambda line: print(line, flush=True))
    save(model, args.out, context=config.corpus.row_len)
    report: EvalReport | None = None
    if not args.no_eval:
        report = evaluate(model, build_tokenizer())
        print(report.summary(), flush=True)
    (args.out / "README.md").write_text(readme_text(config, summary, report))
    print(f"wrote {args.out} in {summary.wall_s:.0f}s, final loss {summary.final_loss:.4f}")
    return 0


def readme_text(config: TrainConfig, summary: TrainSummary, report: EvalReport | None) -> str:
    """The checkpoint folder's README: how it was made and what it measures."""
    size_mb = summary.n_params * 4 / 1e6
    points = summary.curve[:: max(1, len(summary.curve) // 8)] + summary.curve[-1:]
    curve = ", ".join(f"{step}: {loss:.3f}" for step, loss in dict(points).items())
    corpus = config.corpus
    command = (
        f"python -m testbed.train --out OUT --steps {summary.steps} --seed {config.seed}"
        + (f" --init {config.init}" if config.init else "")
        + f" --lr {config.lr:g} --warmup-steps {config.warmup_steps}"
        f" --p-solution {corpus.p_solution:g} --p-repair {corpus.p_repair:g}"
        f" --p-multi-turn {corpus.p_multi_turn:g}"
    )
    lines = [
        "# Bundled CPU model",
        "",
        "A small `LlamaForCausalLM` trained on the synthetic task family of",
        "`testbed/tasks.py`. This stage was made with:",
        "",
        "```",
        command,
        "```",
        "",
        f"- parameters: {summary.n_params:,} (float32, about {size_mb:.1f} MB); shape "
        f"{asdict(config.shape)}",
        f"- steps: {summary.steps} of {config.batch_size} packed rows x "
        f"{config.corpus.row_len} tokens; lr {config.lr:g}, warmup {config.warmup_steps}, "
        f"cosine to x{config.min_lr_ratio:g}",
        f"- wall time: {summary.wall_s / 60:.1f} min on {config.threads} CPU threads",
        f"- final answer-token loss: {summary.final_loss:.4f}",
        f"- loss curve (step: mean answer loss): {curve}",
    ]
    if report is not None:
        lines += ["", "Diagnostics (`testbed/diagnostics.py`):", "", report.summary()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
