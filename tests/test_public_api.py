"""The public API that scripts outside the project import (issue 22's "Keep" list, listed in the
README): each name importable from its documented path, with the same parameters / config fields.

A move inside `lm/` must keep these paths working; renaming a parameter or a config field breaks
callers that pass it by keyword, so the names are pinned here. Adding a trailing optional
parameter or field is allowed (the test checks the pinned names come first, in order).
"""
from __future__ import annotations

import dataclasses
import importlib
import inspect

import pytest
import torch

PUBLIC_API = {   # (module, name) -> parameter / field names pinned (None: a class, checked to exist)
    ("lm.models.gpt2", "GPT2"): None,
    ("lm.models.gpt2", "GPT2Config"): ["vocab_size", "n_positions", "n_embd", "n_layer", "n_head"],
    ("lm.models.gpt2", "GPT2ForSequenceClassification"): None,
    ("lm.models.qwen2", "Qwen2"): None,
    ("lm.models.qwen2", "Qwen2Config"): ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                         "num_attention_heads", "num_key_value_heads"],
    ("lm.models.qwen2", "Qwen2ForSequenceClassification"): None,
    ("lm.tokenizers.gpt2", "GPT2Tokenizer"): None,
    ("lm.tokenizers.bpe", "BPETokenizer"): None,
    ("lm.inference.generate", "generate"): ["model", "input_ids", "max_new_tokens", "attention_mask", "sampling",
                                            "stop_token_ids", "stop_strings", "decode", "pad_token_id", "on_token",
                                            "use_cache", "generator", "vocab_limit"],
    ("lm.training.engine", "TrainConfig"): ["lr", "min_lr_ratio", "warmup_steps", "schedule", "weight_decay", "betas",
                                            "grad_clip", "grad_accum", "batch_size", "context", "max_steps",
                                            "max_tokens", "epochs", "shuffle"],
    ("lm.training.engine", "train"): ["model", "train_data", "val_data", "cfg", "out_dir", "resume", "loss_fn",
                                      "on_eval", "stop_after", "desc"],
    ("lm.finetune.sft", "SFTExamples"): None,
    ("lm.finetune.lora", "LoRAConfig"): ["r", "alpha", "dropout", "target_modules", "use_rslora", "rank_pattern",
                                         "alpha_pattern", "modules_to_save", "fan_in_fan_out", "task_type"],
    ("lm.finetune.lora", "add_lora"): ["model", "cfg"],
    ("lm.finetune.lora", "load_adapter"): ["model", "folder"],
    ("lm.finetune.lora", "save_adapter"): ["model", "folder", "base_model_name_or_path"],
    ("lm.finetune.lora", "merge_and_unload"): ["model"],
    ("lm.finetune.lora", "lora_layers"): ["model"],
    ("lm.finetune.lora", "untie_output_layer"): ["model"],
    ("lm.finetune.classifier", "classifier_from_lm"): ["folder", "labels", "pad_token_id", "device"],
    ("lm.finetune.classifier", "labels_of"): ["config"],
    ("lm.rl.objective", "group_advantages"): ["rewards", "group_size"],
    ("lm.rl.objective", "grpo_loss"): ["logp", "old_logp", "ref_logp", "advantages", "mask", "beta", "epsilon"],
    ("lm.rl.grpo", "GRPOConfig"): ["prompts_per_step", "group_size", "max_new_tokens", "temperature", "top_p", "beta",
                                   "epsilon", "mu", "iterations", "steps", "lr", "weight_decay", "clip_norm"],
    ("lm.rl.grpo", "train_grpo"): ["model", "tokenizer", "problems", "cfg", "out_dir", "eos_id"],
    ("lm.rl.tasks", "Problem"): ["question", "answer", "solution"],
    ("lm.errors", "LMError"): None,
    ("lm.utils", "set_quiet"): ["quiet"],
}


def _names(obj) -> list[str]:
    if dataclasses.is_dataclass(obj):
        return [f.name for f in dataclasses.fields(obj)]
    return list(inspect.signature(obj).parameters)


@pytest.mark.parametrize("module,name", list(PUBLIC_API), ids=[f"{m}.{n}" for m, n in PUBLIC_API])
def test_public_name_keeps_its_path_and_parameters(module, name):
    obj = getattr(importlib.import_module(module), name)
    pinned = PUBLIC_API[(module, name)]
    if pinned is None:
        assert inspect.isclass(obj)
    else:
        assert _names(obj)[:len(pinned)] == pinned


def test_the_public_names_work_together():
    # a tiny end-to-end use through the public paths only: config -> model -> LoRA -> generate
    from lm.finetune.lora import LoRAConfig, add_lora, lora_layers, merge_and_unload
    from lm.inference.generate import generate
    from lm.models.gpt2 import GPT2, GPT2Config
    torch.manual_seed(0)
    model = GPT2(GPT2Config(vocab_size=50, n_positions=32, n_embd=16, n_layer=1, n_head=2)).eval()
    plain = generate(model, [[1, 2, 3]], 5)
    add_lora(model, LoRAConfig(r=2, target_modules=["c_attn"]))
    assert len(lora_layers(model)) == 1
    assert torch.equal(generate(model, [[1, 2, 3]], 5), plain)     # B = 0 at the start: no change
    model = merge_and_unload(model)
    assert torch.equal(generate(model, [[1, 2, 3]], 5), plain)
