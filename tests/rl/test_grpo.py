"""GRPO: the book's rewards and extraction, advantages, the loss against a per-token transcription,
masking after EOS, data parallel == single process, a failing rank, exact resume."""
from __future__ import annotations

import json
import math
import time

import pytest
import torch
import torch.multiprocessing as mp

from lm.errors import ConfigError
from lm.models.gpt2 import GPT2, GPT2Config
from lm.rl import distributed
from lm.rl.grpo import GRPOConfig, Rollout, grpo_update, new_reference, rollout, train_grpo
from lm.inference.sampling import process_logits, sample_next
from lm.models.qwen2 import Qwen2, Qwen2Config
from lm.rl import objective
from lm.rl.objective import (completion_mask, group_advantages, grpo_loss, token_log_probs,
                             token_log_probs_reference)
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


@pytest.mark.parametrize("value", [2.8, 0.6, 1.5])
def test_equal_rewards_give_advantage_exactly_zero(value):
    """float32 mean([2.8] * 8) is not 2.8: without the rule, (r - mean) / (0 + 1e-4) is about 5e-3."""
    rewards = torch.tensor([value] * 8 + [0.0, 2.8, 0.2, 2.0, 0.0, 0.0, 1.5, 0.6], dtype=torch.float32)
    adv = group_advantages(rewards, 8)
    assert adv[:8].tolist() == [0.0] * 8
    assert adv[8:].abs().min() > 0.1                                             # the other group still has signal


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


def test_loss_gradient_is_the_formulas_with_the_kl_term_and_per_sequence_means():
    """d loss / d logp_t = -(1 / N) (1 / n_i) (ratio_t A_i - beta (1 - exp(ref_t - logp_t))) inside the
    clip range. Sequences of 2, 5 and 7 tokens tell a per-sequence mean from a mean over all tokens, and
    a KL term detached from the graph loses the beta part."""
    g = torch.Generator().manual_seed(5)
    N, K, beta = 3, 7, 0.3
    logp = (-torch.rand(N, K, generator=g, dtype=torch.float64) * 2).requires_grad_()
    old = logp.detach() + 0.02 * torch.randn(N, K, generator=g, dtype=torch.float64)   # ratios well inside 1 +- 0.2
    ref = logp.detach() - torch.rand(N, K, generator=g, dtype=torch.float64)
    adv = torch.tensor([1.0, -0.5, 2.0], dtype=torch.float64)
    mask = torch.zeros(N, K, dtype=torch.long)
    for i, n in enumerate((2, 5, 7)):
        mask[i, :n] = 1
    loss, stats = grpo_loss(logp, old, ref, adv, mask, beta=beta, epsilon=0.2)
    loss.backward()
    assert stats["clip_fraction"] == 0.0
    lp = logp.detach()
    ratio, n = torch.exp(lp - old), mask.sum(1, keepdim=True)
    want = -(ratio * adv[:, None] - beta * (1 - torch.exp(ref - lp))) * mask / n / N
    torch.testing.assert_close(logp.grad, want, rtol=1e-10, atol=1e-12)


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


def tiny_qwen2(vocab: int, seed: int = 0):
    torch.manual_seed(seed)
    return Qwen2(Qwen2Config(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                             tie_word_embeddings=False)).eval()


@pytest.mark.parametrize("family", ["gpt2", "qwen2"])
def test_fast_log_probs_equal_the_reference_values_and_gradients(tok, family):
    """The output layer only at completion positions, in chunks of 3 rows: the same numbers as the
    book's full log_softmax, and the same gradients for every parameter."""
    roll, _ = fixed_rollout(tok.vocab_size)
    k = roll.completion_mask.shape[1]
    grads = {}
    for name, fn in (("fast", lambda m: token_log_probs(m, roll.input_ids, roll.attention_mask, k, 0.6)),
                     ("reference", lambda m: token_log_probs_reference(m, roll.input_ids, roll.attention_mask, k, 0.6))):
        model = tiny_policy(tok) if family == "gpt2" else tiny_qwen2(tok.vocab_size)
        with patch_chunk(3 * tok.vocab_size):
            logp = fn(model)                                                     # (N, K)
        (logp * torch.linspace(-1, 1, logp.numel()).view_as(logp)).sum().backward()
        grads[name] = (logp.detach(), {n: p.grad.clone() for n, p in model.named_parameters()})
    (fast, gf), (ref, gr) = grads["fast"], grads["reference"]
    torch.testing.assert_close(fast, ref, atol=1e-6, rtol=0)
    for n in gr:
        torch.testing.assert_close(gf[n], gr[n], atol=1e-6, rtol=1e-5)


class patch_chunk:
    """Make `chosen_log_probs` work in chunks of `elements` logits for the duration."""
    def __init__(self, elements: int):
        self.elements = elements

    def __enter__(self):
        self.saved = objective.CHUNK_ELEMENTS
        objective.CHUNK_ELEMENTS = self.elements

    def __exit__(self, *exc):
        objective.CHUNK_ELEMENTS = self.saved


def test_the_policy_in_the_ratio_is_the_one_that_sampled(tok, monkeypatch):
    """A rollout at T = 0.6: the log-probabilities GRPO computes equal those of the distribution the
    sampler drew from (recorded inside `generate`), so the ratio is exactly 1 at mu = 1; at T = 1 they do not."""
    import lm.inference.generate as gen
    recorded = []

    def recording_sample_next(logits, cfg, counts=None, generator=None):
        ids = sample_next(logits, cfg, counts, generator)
        recorded.append(process_logits(logits, cfg, counts).log_softmax(-1).gather(-1, ids[:, None]).squeeze(-1))
        return ids
    monkeypatch.setattr(gen, "sample_next", recording_sample_next)
    model = tiny_policy(tok, 3)
    cfg = GRPOConfig(prompts_per_step=2, group_size=4, max_new_tokens=8, temperature=0.6)
    roll = rollout(model, tok, PROBLEMS[:2], cfg, tok.eot_id, torch.Generator().manual_seed(0))
    k, m = roll.completion_mask.shape[1], roll.completion_mask.bool()
    sampler = torch.stack(recorded[:k], dim=1)                                  # (N, K)
    ours = token_log_probs(model, roll.input_ids, roll.attention_mask, k, cfg.temperature)
    ratio = torch.exp(ours - sampler)[m]
    assert m.sum() > 10 and torch.allclose(ratio, torch.ones_like(ratio), atol=1e-5)
    at_one = torch.exp(token_log_probs(model, roll.input_ids, roll.attention_mask, k, 1.0) - sampler)[m]
    assert (at_one - 1).abs().max() > 0.05


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


def dp_start(vocab: int) -> GPT2:
    torch.manual_seed(0)
    return GPT2(GPT2Config(vocab_size=vocab, n_positions=32, n_embd=16, n_layer=1, n_head=2,
                           embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0)).eval()


def ragged_rollout(vocab: int) -> tuple[Rollout, torch.Tensor]:
    """8 rows whose completions end early in the first half (up to 2 tokens of 5) and run to the end in
    the second: a rank given only the first half pads its completions to 2, the other to 5."""
    roll, rewards = fixed_rollout(vocab)
    cmask = roll.completion_mask.clone()
    cmask[:4, 2:] = 0
    cmask[:4, :2] = 1
    cmask[4:] = 1
    cmask[5, 4:] = 0
    k = cmask.shape[1]
    amask = roll.attention_mask.clone()
    amask[:, -k:] = cmask
    return Rollout(roll.input_ids, amask, cmask, [""] * 8, [""] * 8), rewards


def _trim(roll: Rollout) -> Rollout:
    """Drop completion columns no row of this shard uses, as a rank's own rollout would."""
    k, used = roll.completion_mask.shape[1], int(roll.completion_mask.sum(1).max())
    cut = roll.input_ids.shape[1] - (k - used)
    return Rollout(roll.input_ids[:, :cut], roll.attention_mask[:, :cut], roll.completion_mask[:, :used], [], [])


def data_parallel_step(rank: int, world: int, vocab: int, out: str) -> None:
    """One GRPO update on a fixed rollout of 4 groups of 2, shared among `world` ranks, each rank's
    completions padded only to its own longest one."""
    d = distributed.init(rank, world, "cpu")
    model = dp_start(vocab)
    distributed.broadcast_parameters(model, d)
    cfg = GRPOConfig(prompts_per_step=4, group_size=2, lr=1e-2, beta=0.04, mu=2)
    roll, rewards = ragged_rollout(vocab)
    adv = group_advantages(rewards, cfg.group_size)
    per = roll.input_ids.shape[0] // world
    rows = slice(rank * per, (rank + 1) * per)
    shard = _trim(_shard(roll, rows))
    if world == 2:
        assert shard.completion_mask.shape[1] == (2 if rank == 0 else 5)
    ref = new_reference(model)
    opt = make_optimizer(model, TrainConfig(lr=cfg.lr, weight_decay=cfg.weight_decay))
    stats = grpo_update(model, ref, opt, shard, adv[rows], cfg, d)
    assert distributed.parameters_identical(model, d)
    if rank == 0:
        torch.save({**model.state_dict(), "loss": torch.tensor(stats["loss"])}, out)
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


def test_two_ranks_equal_one_rank_on_rollouts_of_different_lengths(tmp_path):
    data_parallel_step(0, 1, 37, str(tmp_path / "one.pt"))
    distributed.spawn(data_parallel_step, 2, 37, str(tmp_path / "two.pt"))
    one = torch.load(tmp_path / "one.pt", weights_only=True)
    two = torch.load(tmp_path / "two.pt", weights_only=True)
    for k in one:
        if k != "loss":
            torch.testing.assert_close(two[k], one[k], atol=1e-6, rtol=0)
    start = dp_start(37).state_dict()                                 # the very start both runs began from
    moved = [k for k, v in start.items() if not torch.equal(one[k], v)]
    assert len(moved) == len(start)                                   # the update changed every tensor


def test_the_logged_loss_is_the_mean_over_the_ranks(tmp_path):
    """Rank 0 alone would log its own half's loss; the run logs the mean of both halves' (= 1 rank's)."""
    data_parallel_step(0, 1, 37, str(tmp_path / "one.pt"))
    distributed.spawn(data_parallel_step, 2, 37, str(tmp_path / "two.pt"))
    one = float(torch.load(tmp_path / "one.pt", weights_only=True)["loss"])
    two = float(torch.load(tmp_path / "two.pt", weights_only=True)["loss"])
    assert two == pytest.approx(one, abs=1e-6) and one != 0.0


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
    from lm.rl.experiment import fitting_problems
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


# ---- beta = 0, memory, one pipeline ------------------------------------------------------------

def test_beta_zero_makes_no_reference_copy(tok, tmp_path, monkeypatch):
    import lm.rl.grpo as grpo

    def no_copy(model):
        raise AssertionError("a reference copy was made with beta = 0")
    monkeypatch.setattr(grpo, "new_reference", no_copy)
    cfg = GRPOConfig(prompts_per_step=2, group_size=2, max_new_tokens=4, steps=2, beta=0.0, checkpoint_interval=1)
    m = train_grpo(tiny_policy(tok), tok, PROBLEMS, cfg, tmp_path, tok.eot_id)
    assert m["steps"] == 2 and m["kl_last"] == 0.0


def test_the_chunked_update_equals_the_reference_update(monkeypatch):
    """One mu = 2 update with log-probs in chunks of 2 rows of logits vs the book's full log_softmax."""
    import lm.rl.grpo as grpo
    roll, rewards = fixed_rollout(37)
    after = {}
    for name in ("chunked", "reference"):
        model = dp_start(37)
        ref = new_reference(model)
        with torch.no_grad():
            for p in ref.parameters():
                p.add_(0.05 * torch.randn_like(p))
        if name == "reference":
            monkeypatch.setattr(grpo, "token_log_probs", token_log_probs_reference)
        cfg = GRPOConfig(prompts_per_step=4, group_size=2, lr=1e-2, beta=0.04, mu=2, temperature=0.7)
        opt = make_optimizer(model, TrainConfig(lr=cfg.lr, weight_decay=cfg.weight_decay))
        with patch_chunk(2 * 37):
            grpo_update(model, ref, opt, roll, group_advantages(rewards, 2), cfg, distributed.Dist())
        after[name] = model.state_dict()
    for k, v in after["reference"].items():
        torch.testing.assert_close(after["chunked"][k], v, atol=1e-6, rtol=0)


def toy_folder_and_data(tmp_path, tok) -> tuple:
    """A tiny GPT-2 folder with its tokenizer, and a data dir of 13 training + 6 held-out problems
    (one training problem too long for the model)."""
    folder, data = tmp_path / "model", tmp_path / "data" / "gsm8k"
    model = tiny_policy(tok)
    model.config.eos_token_id = model.config.bos_token_id = tok.eot_id
    model.save_pretrained(folder)
    tok.save(folder)
    data.mkdir(parents=True)
    rows = [{"question": p.question, "answer": f"{p.solution}\n#### {p.answer}"} for p in PROBLEMS]
    rows.append({"question": "What is " + "one plus " * 40 + "one?", "answer": "41\n#### 41"})
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[6:]), encoding="utf-8")
    (data / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:6]), encoding="utf-8")
    return folder, tmp_path / "data"


def test_one_pipeline_for_one_process_and_spawned_ranks(tok, tmp_path):
    """run_grpo in one process and with 2 spawned ranks: the same problem filtering, the same
    measurements of the same starting model, the same metric keys."""
    from lm.rl.experiment import run_grpo
    from lm.rl.warmup import EvalConfig, InstructConfig
    folder, data = toy_folder_and_data(tmp_path, tok)
    cfg = GRPOConfig(prompts_per_step=2, group_size=2, max_new_tokens=8, steps=2, lr=1e-3)
    runs = {}
    for ranks in (1, 2):
        with pytest.warns(UserWarning, match="1 of 13 problems left out"):
            runs[ranks] = run_grpo(folder, data, tmp_path / f"r{ranks}", cfg, EvalConfig(problems=6, max_new_tokens=8),
                                   InstructConfig(epochs=1, batch_size=8), ranks=ranks)
    one, two = runs[1], runs[2]
    assert one.keys() == two.keys()
    for key in ("problems_too_long", "train_problems", "eval_problems", "accuracy_before", "format_rate_before",
                "accuracy_any_format_before", "instruct_loss"):
        assert one[key] == two[key], key
    assert one["problems_too_long"] == 1 and one["train_problems"] == 12 and two["ranks"] == 2
    for key in ("format_rate_after", "accuracy_any_format_after", "reward_format_first", "reward_correctness_last"):
        assert key in one


def test_the_command_line_defaults_are_the_configs_defaults():
    from lm.rl.experiment import build_parser
    from lm.rl.warmup import EvalConfig, InstructConfig, WarmupConfig
    from lm.cli import dataclass_from_args
    a = build_parser().parse_args(["--model", "m", "--data-dir", "d", "--out", "o"])
    assert dataclass_from_args(GRPOConfig, a) == GRPOConfig()
    assert dataclass_from_args(EvalConfig, a, "eval_") == EvalConfig()
    assert dataclass_from_args(InstructConfig, a, "instruct_") == InstructConfig()
    assert dataclass_from_args(WarmupConfig, a, "warmup_") == WarmupConfig()
    a = build_parser().parse_args(["--model", "m", "--data-dir", "d", "--out", "o", "--checkpoint-interval", "7",
                                   "--eval-problems", "9", "--warmup-examples", "none"])
    assert dataclass_from_args(GRPOConfig, a).checkpoint_interval == 7
    assert dataclass_from_args(EvalConfig, a, "eval_").problems == 9
    assert dataclass_from_args(WarmupConfig, a, "warmup_").examples is None


@pytest.mark.slow
def test_torchrun_runs_the_same_pipeline(tok, tmp_path):
    """`torchrun --nproc_per_node=2 -m lm.rl.grpo`: the same filtering and measurements as one process."""
    import subprocess
    import sys
    from lm.rl.experiment import run_grpo
    from lm.rl.warmup import EvalConfig, InstructConfig
    folder, data = toy_folder_and_data(tmp_path, tok)
    flags = ["--model", str(folder), "--data-dir", str(data), "--instruct", "--instruct-epochs", "1",
             "--instruct-batch-size", "8", "--prompts-per-step", "2", "--group-size", "2", "--max-new-tokens", "8",
             "--steps", "2", "--lr", "1e-3", "--eval-problems", "6", "--eval-max-new-tokens", "8"]
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                           f"--master_port={distributed.free_port()}",
                           "-m", "lm.rl.grpo", *flags, "--out", str(tmp_path / "tr")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    via_torchrun = json.loads((tmp_path / "tr" / "summary.json").read_text())
    with pytest.warns(UserWarning):
        alone = run_grpo(folder, data, tmp_path / "one", GRPOConfig(prompts_per_step=2, group_size=2, max_new_tokens=8,
                                                                     steps=2, lr=1e-3),
                         EvalConfig(problems=6, max_new_tokens=8), InstructConfig(epochs=1, batch_size=8))
    assert via_torchrun.keys() == json.loads(json.dumps(alone)).keys()
    for key in ("problems_too_long", "train_problems", "accuracy_before", "format_rate_before"):
        assert via_torchrun[key] == alone[key], key
    assert via_torchrun["ranks"] == 2


def test_the_book_sft_warmup_is_reported_as_after_sft(tok, tmp_path):
    """The TRL notebook's SFT step stays available: accuracy_after_sft (and its format rates) appear, and
    the sentence about what GRPO changed starts from the warmed-up model."""
    from lm.rl.experiment import run_grpo
    from lm.rl.warmup import EvalConfig, WarmupConfig
    folder, data = toy_folder_and_data(tmp_path, tok)
    cfg = GRPOConfig(prompts_per_step=2, group_size=2, max_new_tokens=8, steps=1, lr=1e-3)
    with pytest.warns(UserWarning):
        m = run_grpo(folder, data, tmp_path / "w", cfg, EvalConfig(problems=6, max_new_tokens=8),
                     warmup=WarmupConfig(examples=4, batch_size=2))
    assert m["warmup_examples"] == 4 and m["warmup_steps"] == 2
    for key in ("accuracy_after_sft", "format_rate_after_sft", "accuracy_any_format_after_sft", "accuracy_before"):
        assert 0.0 <= m[key] <= 1.0
    assert f"{100 * m['accuracy_after_sft']:.1f} %" in m["what_changed"]
    with pytest.warns(UserWarning):
        without = run_grpo(folder, data, tmp_path / "n", cfg, EvalConfig(problems=6, max_new_tokens=8))
    assert "accuracy_after_sft" not in without and "warmup_examples" not in without


@pytest.mark.parametrize("after, words", [
    ((0.60, 0.99, 0.62), "mostly the format"),          # accuracy up with the tags, solving flat
    ((0.60, 0.30, 0.90), "mostly in solving"),          # accuracy up, tags barely moved, solving up
    ((0.31, 0.30, 0.65), "did not move"),
    ((0.10, 0.30, 0.20), "worse"),
])
def test_what_grpo_changed_says_where_the_gain_came_from(after, words):
    from lm.rl.experiment import what_grpo_changed
    m = {"accuracy_before": 0.30, "format_rate_before": 0.25, "accuracy_any_format_before": 0.60,
         "accuracy_after": after[0], "format_rate_after": after[1], "accuracy_any_format_after": after[2]}
    text = what_grpo_changed(m)
    assert words in text and "30.0 %" in text and f"{100 * after[0]:.1f} %" in text
