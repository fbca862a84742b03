"""MultiObjectiveTrainer on a tiny GPT-2 built from a config (offline): the same parameters
as a hand-written loop, gradient accumulation, LR scheduler, clipping, checkpoints, bf16."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="needs moopt[llm] (transformers)")

import moopt  # noqa: E402
from moopt.integrations.hf import MultiObjectiveTrainer, ScheduledOptimizer  # noqa: E402
from moopt.integrations.stream import OBJECTIVE_KEY, ObjectiveStream  # noqa: E402
from moopt.schedules import Alternating  # noqa: E402

SCHEDULE = {"forget": 1, "retain": 2}
GA = 2
LR = 1e-2


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=32, n_positions=8, n_embd=16, n_layer=1, n_head=2,
                                  bos_token_id=0, eos_token_id=0, resid_pdrop=0.0,
                                  embd_pdrop=0.0, attn_pdrop=0.0)
    return transformers.GPT2LMHeadModel(cfg)


def data() -> dict[str, list[dict[str, torch.Tensor]]]:
    g = torch.Generator().manual_seed(1)
    out = {}
    for name, n in (("forget", 2), ("retain", 3)):
        batches = []
        for _ in range(n):
            ids = torch.randint(0, 32, (2, 8), generator=g)
            batches.append({"input_ids": ids, "labels": ids})
        out[name] = batches
    return out


def forget_loss(model: Any, batch: dict[str, Any]) -> torch.Tensor:
    return -0.5 * model(**batch).loss


def retain_loss(model: Any, batch: dict[str, Any]) -> torch.Tensor:
    return model(**batch).loss


LOSSES = {"forget": forget_loss, "retain": retain_loss}


def args(out: Path, steps: int, **kw: Any) -> Any:
    base = dict(output_dir=str(out), max_steps=steps, use_cpu=True, report_to=[],
                learning_rate=LR, lr_scheduler_type="linear", gradient_accumulation_steps=GA,
                max_grad_norm=1.0, save_strategy="no", logging_strategy="no",
                disable_tqdm=True, seed=0, weight_decay=0.0, adam_beta2=0.95,
                dataloader_num_workers=0)
    base.update(kw)
    return transformers.TrainingArguments(**base)


def trainer(out: Path, steps: int, model: torch.nn.Module | None = None, **kw: Any) -> Any:
    return MultiObjectiveTrainer(model=model or tiny_model(), args=args(out, steps, **kw),
                                 objective_data=data(), schedule=SCHEDULE, loss_fns=LOSSES,
                                 optimizer_kwargs={"policy": "bridged"})


def manual_run(steps: int) -> list[torch.Tensor]:
    """The same training written by hand with moopt (the reference)."""
    model = tiny_model()
    model.train()
    opt = moopt.MultiObjectiveOptimizer(model.parameters(), objectives=["forget", "retain"],
                                        policy="bridged", lr=LR, betas=(0.9, 0.95),
                                        eps=1e-8, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, (steps - s) / steps))
    sources = {k: itertools.cycle(v) for k, v in data().items()}
    schedule = Alternating(SCHEDULE)
    for _ in range(steps):
        name = next(schedule)
        for _ in range(GA):
            (LOSSES[name](model, next(sources[name])) / GA).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step(objective=name)
        sched.step()
        opt.zero_grad()
    return [p.detach().clone() for p in model.parameters()]


def params(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def test_trainer_equals_a_hand_written_loop(tmp_path: Path) -> None:
    t = trainer(tmp_path, steps=4)
    t.train()
    assert t.objective_log == ["forget", "retain", "retain", "forget"]
    got, want = params(t.model), manual_run(4)
    dev = max(float((a - b).abs().max()) for a, b in zip(got, want))
    assert dev <= 1e-6, dev
    assert dev > 0 or all(torch.equal(a, b) for a, b in zip(got, want))
    opt = t.optimizer
    inner = getattr(opt, "optimizer", opt)
    assert isinstance(inner, ScheduledOptimizer)
    state = inner.state[t.model.transformer.wte.weight]
    assert (state["T"], state["t/forget"], state["t/retain"]) == (4, 2, 2)
    # The LR scheduler drove the group lr: linear decay to 0 at step 4.
    assert inner.param_groups[0]["lr"] == pytest.approx(0.0)


def test_resume_from_a_trainer_checkpoint_is_exact(tmp_path: Path) -> None:
    full = trainer(tmp_path / "a", steps=4, save_strategy="steps", save_steps=2)
    full.train()
    saved = torch.load(tmp_path / "a" / "checkpoint-2" / "optimizer.pt", weights_only=True)
    assert saved["moopt"]["policy"] == "bridged"
    assert saved["moopt"]["objectives"] == ["forget", "retain"]
    resumed = trainer(tmp_path / "a", steps=4)
    resumed.train(resume_from_checkpoint=str(tmp_path / "a" / "checkpoint-2"))
    assert resumed.objective_log == ["retain", "forget"]  # steps 3 and 4 of f, r, r, f
    for a, b in zip(params(resumed.model), params(full.model)):
        assert torch.equal(a, b)


def dropout_model() -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=32, n_positions=8, n_embd=16, n_layer=1, n_head=2,
                                  bos_token_id=0, eos_token_id=0, resid_pdrop=0.1,
                                  embd_pdrop=0.1, attn_pdrop=0.1)
    return transformers.GPT2LMHeadModel(cfg)


@pytest.mark.parametrize("shuffle", [False, True])
def test_resume_is_exact_with_dropout_and_restarted_loaders(tmp_path: Path,
                                                            shuffle: bool) -> None:
    """Per-objective DataLoaders restart inside the run (2 and 3 batches, 2 micro-batches a
    step) and draw their base seeds (and shuffles) from their own generators, so neither
    the restarts nor the Trainer's replay of skipped batches move dropout's random numbers.
    Without that, the parameters after 4 steps differed by 0.04-0.28."""

    def make(out: Path, **kw: Any) -> Any:
        loaders = {k: torch.utils.data.DataLoader(v, batch_size=None, shuffle=shuffle)
                   for k, v in data().items()}
        return MultiObjectiveTrainer(model=dropout_model(), args=args(out, 4, **kw),
                                     objective_data=loaders, schedule=SCHEDULE,
                                     loss_fns=LOSSES, optimizer_kwargs={"policy": "bridged"})

    full = make(tmp_path / "a", save_strategy="steps", save_steps=1)
    full.train()
    want = params(full.model)
    assert any(not torch.equal(a, b) for a, b in zip(want, params(dropout_model())))
    for k in (1, 2, 3) if not shuffle else (2,):
        resumed = make(tmp_path / f"b{k}")
        resumed.train(resume_from_checkpoint=str(tmp_path / "a" / f"checkpoint-{k}"))
        for a, b in zip(params(resumed.model), want):
            assert torch.equal(a, b), f"resumed from checkpoint-{k}"


def test_stream_loaders_leave_the_global_generator_alone() -> None:
    loader = torch.utils.data.DataLoader([{"x": torch.tensor(i)} for i in range(3)],
                                         batch_size=None, shuffle=True)
    torch.manual_seed(5)
    want = torch.rand(3)
    torch.manual_seed(5)
    stream = iter(ObjectiveStream({"a": loader}, "round_robin", seed=1))
    first = [int(next(stream)["x"]) for _ in range(7)]  # restarts twice
    assert torch.equal(torch.rand(3), want)
    again = iter(ObjectiveStream({"a": loader}, "round_robin", seed=1))
    assert [int(next(again)["x"]) for _ in range(7)] == first  # its own seeded shuffles
    assert sorted(first[:3]) == [0, 1, 2]


def test_bf16_mixed_precision_on_cpu(tmp_path: Path) -> None:
    model = tiny_model()
    before = params(model)
    t = trainer(tmp_path, steps=2, model=model, bf16=True)
    t.train()
    after = params(t.model)
    assert all(torch.isfinite(p).all() for p in after)
    assert any(not torch.equal(a, b) for a, b in zip(before, after))
    assert all(p.dtype == torch.float32 for p in after)  # fp32 master weights, bf16 compute


def test_bad_input_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"loss_fns names objectives without data: \['oops'\]"):
        MultiObjectiveTrainer(model=tiny_model(), args=args(tmp_path, 1), objective_data=data(),
                              schedule=SCHEDULE, loss_fns={"oops": retain_loss})
    with pytest.raises(ValueError, match=r"unknown objectives \['other'\]"):
        MultiObjectiveTrainer(model=tiny_model(), args=args(tmp_path, 1), objective_data=data(),
                              schedule={"forget": 1, "other": 1})
    p = torch.nn.Parameter(torch.ones(2))
    opt = ScheduledOptimizer([p], objectives=["a", "b"])
    p.grad = torch.ones(2)
    with pytest.raises(RuntimeError, match="next_objective is not set"):
        opt.step()
    opt.next_objective = "b"
    opt.step()
    assert opt.state[p]["t/b"] == 1


def test_stream_order_and_errors() -> None:
    stream = ObjectiveStream({"a": [{"x": 1}], "b": [{"x": 2}, {"x": 3}]}, "round_robin",
                             accumulation=2)
    got = [(b[OBJECTIVE_KEY], b["x"]) for b, _ in zip(stream, range(8))]
    assert got == [("a", 1), ("a", 1), ("b", 2), ("b", 3), ("a", 1), ("a", 1), ("b", 2),
                   ("b", 3)]
    assert [stream.objective_at(i) for i in range(3)] == ["a", "b", "a"]
    with pytest.raises(ValueError, match="accumulation must be an int >= 1, got 0"):
        ObjectiveStream({"a": []}, "round_robin", accumulation=0)
    with pytest.raises(ValueError, match="objective 'a' yields no batches"):
        next(iter(ObjectiveStream({"a": []}, "round_robin")))
    with pytest.raises(TypeError, match="batches must be dicts, got int"):
        next(iter(ObjectiveStream({"a": [1]}, "round_robin")))
