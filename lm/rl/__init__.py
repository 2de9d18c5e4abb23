"""Layer 4, reinforcement learning (the book's GRPO programs): GSM8K, rewards, GRPO, data parallel.

- `tasks.py`: GSM8K problems, the book's prompt, answer extraction, the two rewards, correctness;
- `grpo.py`: `GRPOConfig`, rollouts through the one batched sampler, the loss, the loop, evaluation;
- `distributed.py`: data parallelism over torch.distributed (gloo on CPU, nccl on CUDA).
"""
