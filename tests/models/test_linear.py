"""lm.models.fast_linear: the oneDNN inference kernel computes what F.linear computes, and only when it may."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lm.models.gpt2 import GPT2, GPT2Config
from lm.models.fast_linear import ONEDNN_AVAILABLE, Linear, linear, uses_onednn

ONEDNN = pytest.mark.skipif(not ONEDNN_AVAILABLE,
                            reason="this torch build has no oneDNN linear")


@ONEDNN
@pytest.mark.parametrize("shape", [(768,), (1, 768), (8, 768), (2, 3, 768), (2, 1, 1, 768)])
@pytest.mark.parametrize("bias", [True, False])
def test_onednn_equals_f_linear(shape, bias):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(300, 768, generator=g)
    b = torch.randn(300, generator=g) if bias else None
    x = torch.randn(*shape, generator=g)
    with torch.no_grad():
        assert uses_onednn(x, w)
        y = linear(x, w, b)
    ref = F.linear(x.double(), w.double(), None if b is None else b.double())
    assert y.shape == ref.shape == (*shape[:-1], 300)
    assert y.dtype == torch.float32
    # float32 rounding of a 768-term sum: both kernels are this close to the float64 answer
    assert torch.allclose(y.double(), ref, rtol=1e-5, atol=1e-4)
    assert torch.allclose(y, F.linear(x, w, b), rtol=1e-5, atol=1e-4)


@ONEDNN
def test_non_contiguous_inputs():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 5, generator=g).t()                 # (5, 64), strided
    w = torch.randn(64, 32, generator=g).t()                # (32, 64), strided
    with torch.no_grad():
        assert torch.allclose(linear(x, w), F.linear(x, w), rtol=1e-5, atol=1e-5)


def test_kernel_choice():
    w = torch.randn(4, 3)
    x = torch.randn(2, 3)
    assert not uses_onednn(x, w)                            # autograd on: F.linear (oneDNN has no backward)
    with torch.no_grad():
        assert not uses_onednn(x.double(), w.double())      # float32 only
        assert not uses_onednn(x.bfloat16(), w.bfloat16())
        assert not uses_onednn(torch.randn(0, 3), w)        # empty input
    with torch.inference_mode():
        assert uses_onednn(x, w) == (ONEDNN_AVAILABLE)


def test_without_onednn_everything_is_f_linear(monkeypatch):
    import lm.models.fast_linear
    monkeypatch.setattr(lm.models.fast_linear, "_ONEDNN_LINEAR", None)
    w, x = torch.randn(4, 3), torch.randn(2, 3)
    with torch.no_grad():
        assert not uses_onednn(x, w)
        assert torch.equal(linear(x, w), F.linear(x, w))


def test_training_path_has_gradients():
    layer = Linear(3, 4)
    x = torch.randn(2, 3, requires_grad=True)
    layer(x).sum().backward()
    assert torch.allclose(x.grad, layer.weight.sum(0).expand(2, 3).detach())
    assert torch.allclose(layer.bias.grad, torch.full((4,), 2.0))


def test_errors_are_f_linears():
    w = torch.randn(4, 3)
    with torch.no_grad(), pytest.raises(RuntimeError, match="cannot be multiplied"):
        linear(torch.randn(2, 5), w)
    with torch.no_grad(), pytest.raises(RuntimeError):
        linear(torch.randn(2, 3), w, torch.randn(5))


def test_linear_is_an_nn_linear_with_the_same_state():
    torch.manual_seed(0)
    a = Linear(5, 7)
    torch.manual_seed(0)
    b = torch.nn.Linear(5, 7)
    assert isinstance(a, torch.nn.Linear)
    assert a.state_dict().keys() == b.state_dict().keys()
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())


def test_gpt2_logits_same_with_and_without_autograd():
    """The model's inference path (oneDNN on the CPU) gives the training path's logits."""
    torch.manual_seed(0)
    model = GPT2(GPT2Config(vocab_size=97, n_positions=32, n_embd=64, n_layer=2, n_head=4)).eval()
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 2 * 4 and all(type(m) is Linear for m in linears)   # c_attn, c_proj, c_fc, c_proj
    ids = torch.randint(0, 97, (2, 9))
    train_path = model(ids).detach()
    with torch.inference_mode():
        infer_path = model(ids)
    assert torch.allclose(infer_path, train_path, rtol=1e-5, atol=1e-5)


def test_env_switch_turns_the_fast_path_off():
    """LM_FAST_LINEAR=0 (read at import): every call goes through F.linear."""
    code = ("import torch, lm.models.fast_linear as f; x, w = torch.randn(1, 8), torch.randn(4, 8)\n"
            "with torch.no_grad(): print(f.ENABLED, f.ONEDNN_AVAILABLE, f.uses_onednn(x, w))")
    env = dict(os.environ, LM_FAST_LINEAR="0", PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False", "False"]
