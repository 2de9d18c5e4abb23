"""GRPO behaviours through the public API only (lm.rl.tasks, lm.rl.distributed, lm.rl.grpo.train_grpo),
so they hold whatever the inside of lm/rl/grpo.py looks like:

- the 1.5 reward needs a number on both sides (an untagged answer to a non-numeric gold scores 0);
- data parallelism averages gradients over the ranks: 2 ranks take the same plain-SGD step as 1 rank
  on the whole batch (Adam's scale invariance and the 0.1 clip would hide a sum);
- each outer iteration starts from a fresh reference (the policy as it is then) and a fresh optimizer.
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

from lm.rl import distributed
from lm.rl.grpo import GRPOConfig, train_grpo
from lm.rl.tasks import Problem, build_prompt, combined_reward, correctness_reward, format_completion
from lm.models.gpt2 import GPT2, GPT2Config
from lm.tokenizers.gpt2 import GPT2Tokenizer

# ---- the 1.5 reward ----------------------------------------------------------------------------


@pytest.mark.parametrize("completion, gold, reward", [
    ("I think the answer is seven.", "seven", 0.0),          # no answer tags, gold without a number
    ("<answer>\neight\n</answer>", "seven", 0.0),           # a wrong non-numeric answer
    ("no tags at all", "3 and 4", 0.0),                      # gold with two numbers: no single number
    ("<answer>\nthree and four\n</answer>", "3 and 4", 0.0),
    ("<answer>\nseven\n</answer>", "seven", 2.0),           # the same text: 2.0
    ("<answer>\n21 apples\n</answer>", "21", 1.5),          # the same single number: 1.5
    ("<answer>\n21\n</answer>", "21.0", 1.5),
    ("the answer is 21", "21", 0.0),                         # untagged: no extracted answer
])
def test_the_one_and_a_half_reward_needs_a_number_on_both_sides(completion, gold, reward):
    assert correctness_reward(completion, gold) == reward


def test_an_untagged_answer_to_a_word_answer_earns_nothing():
    assert combined_reward("seven", "seven") == 0.0


# ---- data parallel: the gradient is the mean over the ranks ------------------------------------

X = torch.linspace(-1, 1, 32).view(8, 4)                     # 8 examples, 4 features
Y = torch.tensor([0.5, -1.0, 2.0, 0.0, 1.5, -0.5, 1.0, 3.0])
LR = 0.1


def sgd_step(rank: int, world: int, out: str) -> None:
    """One plain-SGD step of a linear model on the mean squared error, the 8 examples shared among
    the ranks; rank 0 saves the averaged gradient and the new parameters."""
    d = distributed.init(rank, world, "cpu", timeout_s=60)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    distributed.broadcast_parameters(model, d)
    per = len(X) // world
    rows = slice(rank * per, (rank + 1) * per)
    loss = ((model(X[rows]).squeeze(1) - Y[rows]) ** 2).mean()   # this rank's share: mean over its rows
    loss.backward()
    distributed.all_reduce_gradients(list(model.parameters()), d)
    grads = [p.grad.clone() for p in model.parameters()]
    torch.optim.SGD(model.parameters(), lr=LR).step()
    if rank == 0:
        torch.save({"grads": grads, "params": [p.detach().clone() for p in model.parameters()]}, out)
    distributed.shutdown(d)


def test_two_ranks_average_gradients_and_take_the_one_rank_sgd_step(tmp_path):
    sgd_step(0, 1, str(tmp_path / "one.pt"))
    distributed.spawn(sgd_step, 2, str(tmp_path / "two.pt"))
    one = torch.load(tmp_path / "one.pt", weights_only=True)
    two = torch.load(tmp_path / "two.pt", weights_only=True)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)                              # by hand: the whole batch's gradient
    ((model(X).squeeze(1) - Y) ** 2).mean().backward()
    for g1, g2, p in zip(one["grads"], two["grads"], model.parameters()):
        torch.testing.assert_close(g1, p.grad, atol=1e-6, rtol=0)
        torch.testing.assert_close(g2, p.grad, atol=1e-6, rtol=0)         # a sum would be twice it
    for q1, q2, p in zip(one["params"], two["params"], model.parameters()):
        torch.testing.assert_close(q2, q1, atol=1e-6, rtol=0)
        torch.testing.assert_close(q2, p.detach() - LR * p.grad, atol=1e-6, rtol=0)


# ---- outer iterations: fresh reference and optimizer --------------------------------------------

PROBLEMS = [Problem(f"What is {a} + {b}?", str(a + b), f"{a} + {b} = {a + b}") for a in range(1, 7) for b in range(1, 4)]


@pytest.fixture(scope="module")
def tok():
    lines = [build_prompt(p.question) + "\n" + format_completion(p) for p in PROBLEMS]
    return GPT2Tokenizer.train(lines * 3, 300)


def varied_reward(completion: str, gold: str) -> float:
    """Rewards that differ within a group for any policy, so every step moves the policy."""
    return float(sum(map(ord, completion)) % 7)


def run(tok, tmp_path, name: str, stop_after: int) -> tuple[dict, list[dict]]:
    torch.manual_seed(0)
    model = GPT2(GPT2Config(vocab_size=tok.vocab_size, n_positions=128, n_embd=32, n_layer=1, n_head=2,
                            embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0)).eval()
    cfg = GRPOConfig(prompts_per_step=2, group_size=4, max_new_tokens=6, steps=2, iterations=2, lr=1e-2,
                     weight_decay=0.0, beta=0.04, seed=3)
    train_grpo(model, tok, PROBLEMS, cfg, tmp_path / name, tok.eot_id, reward_fns={"varied": varied_reward},
               stop_after=stop_after)
    records = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    return {k: v.clone() for k, v in model.state_dict().items()}, records


def test_each_outer_iteration_starts_a_fresh_reference_and_optimizer(tok, tmp_path):
    """iterations=2, steps=2. Step 3 opens iteration 2: its reference is the policy as iteration 1
    left it, so the KL of step 3 (measured before its update) is 0 while step 2's is not;
    and its optimizer is new, so the update of step 3 is fresh Adam's first step: every parameter
    moves by lr * |g| / (|g| + eps): at most lr, and by lr itself unless its gradient is tiny (no
    weight decay here)."""
    after_1, _ = run(tok, tmp_path, "a", stop_after=2)                        # the end of iteration 1
    after_3, records = run(tok, tmp_path, "b", stop_after=3)                  # one step into iteration 2
    kl = {r["step"]: r["kl"] for r in records}
    assert sorted(kl) == [1, 2, 3]
    assert kl[1] < 1e-7 and kl[2] > 1e-4              # (here exactly 0, and 0.0096): the policy moved in iteration 1
    assert kl[3] < 1e-7                               # (here exactly 0; 0.0104 with a stale reference): re-copied
    moves = torch.cat([(after_3[k] - after_1[k]).abs().flatten() for k in after_1 if after_1[k].is_floating_point()])
    assert moves.max() <= 1e-2 * (1 + 1e-5)                                    # never more than lr
    at_lr = ((moves - 1e-2).abs() < 1e-5).float().mean().item()
    assert at_lr > 0.3, at_lr       # most by lr exactly (here 69 %; an Adam in its 5th step: 0.1 %)


def sleeping_rank(rank: int, world: int, folder: str) -> None:
    (Path(folder) / f"rank{rank}.pid").write_text(str(os.getpid()))
    time.sleep(120)


def test_an_interrupted_spawn_stops_its_ranks(tmp_path):
    """SIGTERM (or Ctrl-C) while the ranks run: spawn raises at once and no rank is left running
    (run_all.py then writes its summary and exits, rather than waiting for the ranks at exit)."""
    class Stop(KeyboardInterrupt):
        pass

    def stop(signum, frame):
        raise Stop()

    def signal_when_started():
        deadline = time.monotonic() + 120
        while len(list(tmp_path.glob("rank*.pid"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        threading.Thread(target=signal_when_started, daemon=True).start()
        t0 = time.monotonic()
        with pytest.raises(Stop):
            distributed.spawn(sleeping_rank, 2, str(tmp_path))
        assert time.monotonic() - t0 < 60
    finally:
        signal.signal(signal.SIGTERM, previous)
    for f in tmp_path.glob("rank*.pid"):
        with pytest.raises(ProcessLookupError):
            os.kill(int(f.read_text()), 0)                   # gone (and reaped)
