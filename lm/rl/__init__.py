"""Layer 4, reinforcement learning (the book's GRPO programs): GSM8K, rewards, GRPO, data parallel.

Read in this order:
- `tasks.py`: GSM8K problems, the book's prompt, answer extraction, the two rewards, correctness;
- `objective.py`: the mathematics of one update (masks, log-probabilities at the sampling
  temperature, group advantages, the loss);
- `distributed.py`: data parallelism over torch.distributed (gloo on CPU, nccl on CUDA);
- `grpo.py`: `GRPOConfig`, rollouts through the one batched sampler, the update, the loop;
- `warmup.py`: the model GRPO starts from (our instruction tuning), the book's SFT warm-up, evaluation;
- `experiment.py`: the whole experiment for every launcher, and the command line.
"""
