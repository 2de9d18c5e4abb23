"""GRPO: the book's rewards and extraction, advantages, the loss against a per-token transcription,
masking after EOS, data parallel == single process, a failing rank, exact resume."""
from __future__ import annotations

import math
import time

import pytest
import torch
import torch.multiprocessing as mp

from lm.errors import ConfigError
from lm.models.gpt2 import GPT2, GPT2Config
from lm.rl import distributed
from lm.rl.grpo import GRPOConfig, Rollout, grpo_update, new_reference, rollout, train_grpo
from lm.rl.objective import completion_mask, group_advantages, grpo_loss
from lm.rl.tasks import (Problem, accuracy, build_prompt, combined_reward, correctness_reward, extract_answer,
                         extract_last_number, extract_single_number, format_completion, format_reward,
                         is_correct, load_problems)
from lm.tokenizers.gpt2 import GPT2Tokenizer
from lm.training.engine import TrainConfig, make_optimizer

# ---- rewards and extraction (the book's cases first) ---------------------------------------

GOOD = "<reasoning>\n6 + 15 = 21\n</reasoning>\n<answer>\n21\n</answer>"


def test_extract_answer_book_cases_and_edges():
    assert extract_answer(GOOD) == "21"
    assert extract_answer("no tags at all, 21") is None
    assert extract_answer("<answer>\n...\n</answer>") is None                    # the prompt's placeholder
    assert extract_answer("<answer>3</answer> then <answer> 4 </answer>") == "4"   # the last one
    assert extract_answer("<answer> 5") is None                                  # never closed
    assert extract_answer("<answer>-2.5</answer>") == "-2.5"


def test_number_helpers():
    assert extract_single_number("-3") == -3.0 and extract_single_number("x = .5") == 0.5
    assert extract_single_number("3 or 4") is None and extract_single_number("none") is None
    assert extract_last_number("total: $12") == 12.0 and extract_last_number("50%") == 50.0
    assert extract_last_number("it is 7 apples") is None and extract_last_number("a=-1.25") == -1.25


def test_rewards_book_values():
    assert correctness_reward(GOOD, "21") == 2.0
    assert correctness_reward("<answer>21 lamps</answer>", "21") == 1.5          # one number, equal
    assert correctness_reward("<answer>21.0</answer>", "21") == 1.5
    assert correctness_reward("<answer>20 or 21</answer>", "21") == 0.0          # two numbers
    assert correctness_reward("21", "21") == 0.0                                 # no tags
    assert format_reward(GOOD, "21") == pytest.approx(0.8)
    assert format_reward("<answer>21", "21") == pytest.approx(0.2)
    assert combined_reward(GOOD, "21") == pytest.approx(2.8)


def test_evaluation_rule_and_accuracy():
    assert is_correct(GOOD, "21") and is_correct("<answer>so 21</answer>", "21")
    assert is_correct("<answer>from 3 to 21</answer>", "21")                     # the last number
    assert not is_correct("21", "21") and not is_correct("<answer>...</answer>", "21")
    assert not is_correct("<answer>-21</answer>", "21")
    assert accuracy([GOOD, "x"], ["21", "21"]) == 0.5


def test_prompt_and_sft_target():
    p = Problem("How many?", "12", "Loric fills 108 / 9 = <<108/9=12>>12 boxes.")
    assert build_prompt(p.question).startswith("Respond in the following format:\n\n<reasoning>")
    assert build_prompt(p.question).endswith("</answer>\nHow many?")
    target = format_completion(p)
    assert "<<" not in target and combined_reward(target, "12") == pytest.approx(2.8)


def test_embedded_problems_load():
    problems = load_problems("data/gsm8k/train.jsonl")
    assert len(problems) == 1500 and all(p.answer and "####" not in p.answer for p in problems)


# ---- advantages, the loss, masks -----------------------------------------------------------

def test_group_advantages():
    adv = group_advantages(torch.tensor([1.0, 1.0, 1.0, 0.0, 2.0, 4.0]), 3)
    assert adv[:3].tolist() == [0.0, 0.0, 0.0]                                   # equal rewards: 0, not NaN
    r = torch.tensor([0.0, 2.0, 4.0])
    assert torch.allclose(adv[3:], (r - 2.0) / (2.0 + 1e-4))                     # unbiased std = 2


def transcribed_loss(logp, old, ref, adv, mask, beta, eps):
    """The formula written out token by token with Python floats."""
    per_seq = []
    for i in range(len(logp)):
        total, count = 0.0, 0
        for t in range(len(logp[i])):
            if mask[i][t]:
                ratio = math.exp(logp[i][t] - old[i][t])
                clipped = min(max(ratio, 1 - eps), 1 + eps)
                surrogate = min(ratio * adv[i], clipped * adv[i])
                kl = math.exp(ref[i][t] - logp[i][t]) - (ref[i][t] - logp[i][t]) - 1
                total += surrogate - beta * kl
                count += 1
        per_seq.append(total / count)
    return -sum(per_seq) / len(per_seq)


def test_loss_equals_per_token_transcription():
    g = torch.Generator().manual_seed(0)
    N, K = 5, 7
    logp, old, ref = (-torch.rand(N, K, generator=g, dtype=torch.float64) * 3 for _ in range(3))
    adv = torch.randn(N, generator=g, dtype=torch.float64)
    mask = (torch.rand(N, K, generator=g) > 0.3).long()
    mask[:, 0] = 1
    loss, stats = grpo_loss(logp, old, ref, adv, mask, beta=0.04, epsilon=0.2)
    want = transcribed_loss(logp.tolist(), old.tolist(), ref.tolist(), adv.tolist(), mask.tolist(), 0.04, 0.2)
    assert float(loss) == pytest.approx(want, rel=1e-12)
    assert 0 < stats["clip_fraction"] < 1


def test_k3_is_nonnegative_and_zero_at_the_reference():
    g = torch.Generator().manual_seed(1)
    logp, ref = -torch.rand(4, 6, generator=g) * 5, -torch.rand(4, 6, generator=g) * 5
    mask, adv = torch.ones(4, 6), torch.zeros(4)
    _, stats = grpo_loss(logp, logp, ref, adv, mask, beta=1.0, epsilon=0.2)
    d = ref - logp
    assert (torch.exp(d) - d - 1 >= 0).all() and stats["kl"] > 0
    loss, stats = grpo_loss(logp, logp, logp, adv, mask, beta=1.0, epsilon=0.2)
    assert stats["kl"] == 0.0 and float(loss) == 0.0


def test_mu_one_ratio_is_one_and_the_clip_does_not_bind():
    g = torch.Generator().manual_seed(2)
    logp = (-torch.rand(3, 5, generator=g) * 2).requires_grad_()
    adv, mask = torch.tensor([1.0, -2.0, 0.5]), torch.ones(3, 5)
    loss, stats = grpo_loss(logp, logp.detach(), logp.detach(), adv, mask, beta=0.0, epsilon=1e-9)
    loss.backward()
    assert stats["clip_fraction"] == 0.0
    # ratio == 1 everywhere: d loss / d logp_t = -A / (N * K_i), the plain policy gradient
    assert torch.allclose(logp.grad, -(adv[:, None] / (3 * 5)).expand(3, 5))


def test_completion_mask_and_masked_tokens_do_not_count():
    comp = torch.tensor([[4, 4, 9, 4, 4], [9, 1, 1, 1, 1], [1, 2, 3, 4, 5]])
    mask = completion_mask(comp, eos_id=9)
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]]
    g = torch.Generator().manual_seed(3)
    logp, old, ref = (-torch.rand(3, 5, generator=g) for _ in range(3))
    adv = torch.tensor([1.0, -1.0, 0.3])
    a, _ = grpo_loss(logp, old, ref, adv, mask, 0.04, 0.2)
    noisy = logp.clone()
    noisy[mask == 0] = -50.0                                                     # anything after the EOS
    b, _ = grpo_loss(noisy, old, ref, adv, mask, 0.04, 0.2)
    assert float(a) == float(b)


def test_bad_configs():
    with pytest.raises(ConfigError, match="group_size"):
        GRPOConfig(group_size=1).validate()
    with pytest.raises(ConfigError, match="divisible"):
        GRPOConfig(prompts_per_step=3).validate(world=2)


# ---- a tiny policy ---------------------------------------------------------------------------

PROBLEMS = [Problem(f"What is {a} + {b}?", str(a + b), f"{a} + {b} = {a + b}") for a in range(1, 7) for b in range(1, 4)]


@pytest.fixture(scope="module")
def tok():
    lines = [build_prompt(p.question) + "\n" + format_completion(p) for p in PROBLEMS]
    return GPT2Tokenizer.train(lines * 3, 300)


def tiny_policy(tok, seed=0):
    torch.manual_seed(seed)
    return GPT2(GPT2Config(vocab_size=tok.vocab_size, n_positions=128, n_embd=32, n_layer=1, n_head=2,
                           embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0)).eval()


def test_rollout_shapes_masks_and_texts(tok):
    model = tiny_policy(tok)
    cfg = GRPOConfig(prompts_per_step=2, group_size=3, max_new_tokens=6)
    roll = rollout(model, tok, PROBLEMS[:2], cfg, tok.eot_id, torch.Generator().manual_seed(0))
    N, K = roll.completion_mask.shape
    assert N == 6 and K <= 6 and roll.input_ids.shape == roll.attention_mask.shape
    assert roll.answers == ["2"] * 3 + ["3"] * 3
    assert torch.equal(roll.attention_mask[:, -K:], roll.completion_mask)
    for text, ids, m in zip(roll.completions, roll.input_ids[:, -K:].tolist(), roll.completion_mask.tolist()):
        kept = ids[:sum(m)]
        assert text == tok.decode(kept[:-1] if kept[-1] == tok.eot_id else kept)
        assert tok.eot_id not in kept[:-1]                                      # the mask ends at the first EOS


def test_training_resumes_exactly_after_a_crash(tok, tmp_path):
    cfg = GRPOConfig(prompts_per_step=2, group_size=2, max_new_tokens=5, steps=3, iterations=2, lr=1e-3,
                     checkpoint_interval=2, seed=4)
    straight = tiny_policy(tok, 1)
    train_grpo(straight, tok, PROBLEMS, cfg, tmp_path / "a", tok.eot_id)
    calls = {"n": 0}

    def dies_at_step_four(completion, gold):                          # one call per completion: 4 a step
        calls["n"] += 1
        if calls["n"] > 3 * 4:
            raise KeyboardInterrupt("killed")
        return format_reward(completion, gold)
    crashed = tiny_policy(tok, 1)
    with pytest.raises(KeyboardInterrupt):
        train_grpo(crashed, tok, PROBLEMS, cfg, tmp_path / "b", tok.eot_id,
                   reward_fns={"correctness": correctness_reward, "format": dies_at_step_four})
    resumed = tiny_policy(tok, 99)                                    # everything must come from the checkpoint
    m = train_grpo(resumed, tok, PROBLEMS, cfg, tmp_path / "b", tok.eot_id, resume=True)
    assert m["steps"] == 6
    for p, q in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(p, q)


# ---- data parallel -----------------------------------------------------------------------------

def fixed_rollout(vocab: int, n: int = 8, t: int = 6, k: int = 5) -> tuple[Rollout, torch.Tensor]:
    g = torch.Generator().manual_seed(11)
    ids = torch.randint(0, vocab, (n, t + k), generator=g)
    cmask = torch.ones(n, k, dtype=torch.long)
    cmask[::3, 3:] = 0
    amask = torch.cat([torch.ones(n, t, dtype=torch.long), cmask], dim=1)
    amask[1::2, :2] = 0                                                        # some left padding
    rewards = torch.rand(n, generator=g) * 2.8
    return Rollout(ids, amask, cmask, [""] * n, [""] * n), rewards


def _shard(roll: Rollout, rows: slice) -> Rollout:
    return Rollout(roll.input_ids[rows], roll.attention_mask[rows], roll.completion_mask[rows], [], [])


def data_parallel_step(rank: int, world: int, vocab: int, out: str) -> None:
    """One GRPO update on a fixed rollout of 4 groups of 2, shared among `world` ranks."""
    d = distributed.init(rank, world, "cpu")
    torch.manual_seed(0)
    model = GPT2(GPT2Config(vocab_size=vocab, n_positions=32, n_embd=16, n_layer=1, n_head=2,
                            embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0)).eval()
    distributed.broadcast_parameters(model, d)
    cfg = GRPOConfig(prompts_per_step=4, group_size=2, lr=1e-2, beta=0.04, mu=2)
    roll, rewards = fixed_rollout(vocab)
    adv = group_advantages(rewards, cfg.group_size)
    per = roll.input_ids.shape[0] // world
    rows = slice(rank * per, (rank + 1) * per)
    ref = new_reference(model)
    opt = make_optimizer(model, TrainConfig(lr=cfg.lr, weight_decay=cfg.weight_decay))
    grpo_update(model, ref, opt, _shard(roll, rows), adv[rows], cfg, d)
    assert distributed.parameters_identical(model, d)
    if rank == 0:
        torch.save({k: v for k, v in model.state_dict().items()}, out)
    distributed.shutdown(d)


def test_micro_batches_give_the_same_update_as_the_whole_batch():
    """mu = 2 (old log-probs, clipping) and beta > 0 (reference), 8 rows in chunks of 3, 3, 2."""
    roll, rewards = fixed_rollout(37)
    after = {}
    for micro in (0, 3):
        torch.manual_seed(0)
        model = GPT2(GPT2Config(vocab_size=37, n_positions=32, n_embd=16, n_layer=1, n_head=2,
                                embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0)).eval()
        ref = new_reference(model)
        with torch.no_grad():
            for p in ref.parameters():
                p.add_(0.05 * torch.randn_like(p))                             # a reference that differs
        cfg = GRPOConfig(prompts_per_step=4, group_size=2, lr=1e-2, beta=0.04, mu=2, micro_batch=micro)
        opt = make_optimizer(model, TrainConfig(lr=cfg.lr, weight_decay=cfg.weight_decay))
        stats = grpo_update(model, ref, opt, roll, group_advantages(rewards, 2), cfg, distributed.Dist())
        after[micro] = (model.state_dict(), stats)
    (whole, s0), (chunked, s3) = after[0], after[3]
    for k in whole:
        torch.testing.assert_close(chunked[k], whole[k], atol=1e-6, rtol=0)
    assert s3["kl"] == pytest.approx(s0["kl"], abs=1e-6) and s0["kl"] > 0
    assert s3["loss"] == pytest.approx(s0["loss"], abs=1e-6)
    assert s3["clip_fraction"] == pytest.approx(s0["clip_fraction"], abs=1e-6)


def test_two_ranks_equal_one_rank_on_fixed_rollouts(tmp_path):
    data_parallel_step(0, 1, 37, str(tmp_path / "one.pt"))
    distributed.spawn(data_parallel_step, 2, 37, str(tmp_path / "two.pt"))
    one = torch.load(tmp_path / "one.pt", weights_only=True)
    two = torch.load(tmp_path / "two.pt", weights_only=True)
    for k in one:
        torch.testing.assert_close(two[k], one[k], atol=1e-6, rtol=0)
    start = GPT2(GPT2Config(vocab_size=37, n_positions=32, n_embd=16, n_layer=1, n_head=2))
    assert any(not torch.equal(one[k], v) for k, v in start.state_dict().items() if k in one)


def rank_one_fails(rank: int, world: int) -> None:
    d = distributed.init(rank, world, "cpu", timeout_s=60)
    if rank == 1:
        raise ValueError("rank 1 broke on purpose")
    distributed.all_sum([1.0], d)                                       # rank 0 waits here for rank 1


def test_a_failing_rank_fails_the_job_without_hanging():
    t0 = time.perf_counter()
    with pytest.raises(mp.ProcessRaisedException, match="rank 1 broke on purpose"):
        distributed.spawn(rank_one_fails, 2)
    assert time.perf_counter() - t0 < 60


def test_problems_whose_prompt_does_not_fit_are_left_out_with_a_warning(tok):
    from lm.rl.grpo import fitting_problems
    long = Problem("What is " + "one plus " * 60 + "one?", "61", "")
    lengths = [len(tok.encode(build_prompt(p.question))) for p in (PROBLEMS[0], long)]
    cfg = GPT2Config(vocab_size=tok.vocab_size, n_positions=lengths[0] + 10)
    assert lengths[1] + 10 > cfg.n_positions
    with pytest.warns(UserWarning, match="1 of 2 problems left out"):
        kept, skipped = fitting_problems([PROBLEMS[0], long], tok, cfg, 10)
    assert kept == [PROBLEMS[0]] and skipped == 1
    assert fitting_problems([PROBLEMS[0]], tok, cfg, 10) == ([PROBLEMS[0]], 0)
    with pytest.raises(ConfigError, match="no problem's prompt fits"):
        fitting_problems([long], tok, cfg, 10)
