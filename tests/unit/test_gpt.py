import itertools
import math

import pytest
import torch

from genlab.data.spec import DataSpec
from genlab.errors import ConfigError
from genlab.models.gpt import GPT
from genlab.models.schedules import warmup_cosine, warmup_cosine_schedule
from genlab.nn.transformer import Transformer, filter_logits, generate, next_token

VOCAB = "\n abcdefg"


def tiny_net(block_size=16, vocab_size=11, **kw) -> Transformer:
    torch.manual_seed(0)
    kw = {"n_layer": 2, "n_head": 2, "n_embd": 16, **kw}
    return Transformer(vocab_size, block_size, **kw).eval()


def text_spec(block_size=8, vocab=VOCAB) -> dict:
    return DataSpec((block_size,), "levels", len(vocab), None, vocab).to_dict()


@pytest.mark.parametrize("bias", [True, False])
def test_output_at_i_depends_on_inputs_up_to_i_only(bias):
    net = tiny_net(block_size=8, bias=bias)
    idx = torch.randint(0, 11, (1, 8), generator=torch.Generator().manual_seed(1))
    for i in range(8):
        h = net.embed(idx).detach().requires_grad_(True)
        net.forward_embeddings(h)[0, i].sum().backward()
        g = h.grad[0].abs().sum(-1)  # (T,)
        assert g[i + 1 :].tolist() == [0.0] * (7 - i), f"position {i} sees the future"
        assert (g[: i + 1] > 0).all(), f"position {i} ignores its past"


def test_equal_logits_give_exactly_log2_vocab_bits_per_char():
    model = GPT(text_spec(), n_layer=1, n_head=1, n_embd=8)
    with torch.no_grad():
        model.net.tok_emb.weight.zero_()  # tied output layer: every logit is exactly 0
    x = torch.randint(0, len(VOCAB), (3, 8))
    assert model(x).abs().max().item() == 0.0
    assert model.log_prob(x).tolist() == pytest.approx([-8 * math.log(len(VOCAB))] * 3, rel=1e-7)
    nll = model.token_nll(x, x)
    assert nll.flatten().tolist() == pytest.approx([math.log(len(VOCAB))] * 24, rel=1e-7)


def test_log_prob_is_a_normalised_distribution_matching_sample_length():
    # vocabulary of 3 and windows of 3: the 27 sequences must carry total probability 1
    spec = DataSpec((3,), "levels", 3, None, "\nab").to_dict()
    model = GPT(spec, n_layer=1, n_head=1, n_embd=8).eval()
    xs = torch.tensor(list(itertools.product(range(3), repeat=3)))
    total = model.log_prob(xs).double().exp().sum().item()
    assert total == pytest.approx(1.0, abs=1e-6)
    assert model.sample(5).shape == (5, 3)


@pytest.mark.parametrize(
    "kw",
    [
        {},  # plain sampling, window jumps at block_size // 2
        {"temperature": 0.7, "top_k": 5, "top_p": 0.9},
        {"keep": 16},  # the classic sliding window
        {"keep": 1},
        {"temperature": 0.0},  # greedy
    ],
)
def test_cached_and_full_recompute_samplers_give_the_same_tokens(kw):
    net = tiny_net(block_size=16)
    prompt = torch.tensor([[1, 2, 3], [4, 5, 6]])
    outs = []
    for use_cache in (True, False):
        g = torch.Generator().manual_seed(123)
        outs.append(generate(net, prompt, 60, generator=g, use_cache=use_cache, **kw))  # 63 > block_size
    assert outs[0].shape == (2, 63)
    assert torch.equal(outs[0], outs[1])
    assert torch.equal(outs[0][:, :3], prompt)


def test_prompt_longer_than_block_size_and_same_seed_same_output():
    net = tiny_net(block_size=16)
    prompt = torch.randint(0, 11, (1, 40), generator=torch.Generator().manual_seed(0))
    a = generate(net, prompt, 30, generator=torch.Generator().manual_seed(5))
    b = generate(net, prompt, 30, generator=torch.Generator().manual_seed(5))
    c = generate(net, prompt, 30, generator=torch.Generator().manual_seed(6))
    naive = generate(net, prompt, 30, generator=torch.Generator().manual_seed(5), use_cache=False)
    assert a.shape == (1, 70) and torch.equal(a, b) and torch.equal(a, naive)
    assert not torch.equal(a, c)


def test_greedy_is_the_argmax_chain_and_top_k_1_is_greedy():
    net = tiny_net(block_size=8)
    prompt = torch.tensor([[3]])
    greedy = generate(net, prompt, 6, temperature=0.0)
    seq = prompt
    with torch.no_grad():
        for _ in range(6):
            seq = torch.cat([seq, net(seq)[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(greedy, seq)
    assert torch.equal(generate(net, prompt, 6, top_k=1, generator=torch.Generator().manual_seed(0)), greedy)


def test_window_schedule_beyond_block_size_against_a_reference_loop():
    # the context of each new token: the classic crop to the last block_size tokens (keep = block_size),
    # or, by default, a window that restarts from the last block_size // 2 tokens when full
    net = tiny_net(block_size=8)
    prompt = torch.tensor([[3, 1]])
    for keep in (8, 4):
        seq, start = prompt, 0
        with torch.no_grad():
            for _ in range(25):
                if seq.shape[1] - start > 8:
                    start = seq.shape[1] - keep
                seq = torch.cat([seq, net(seq[:, start:])[:, -1].argmax(-1, keepdim=True)], 1)
        assert torch.equal(generate(net, prompt, 25, temperature=0.0, keep=keep), seq)
    sliding = prompt
    with torch.no_grad():
        for _ in range(25):
            sliding = torch.cat([sliding, net(sliding[:, -8:])[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(generate(net, prompt, 25, temperature=0.0, keep=8), sliding)


def test_window_schedule_beyond_block_size_is_exact():
    # block 8, keep 4, prompt of 2: contexts 2..8, then (8 + 1 > 8) restart from the last 4: 4..8, 4..8, ...
    net = tiny_net(block_size=8)
    calls = []
    forward = net.forward

    def spy(idx, condition=None, cache=None, last_only=False):
        calls.append((cache.length if cache is not None else None, idx.shape[1]))
        return forward(idx, condition, cache, last_only)

    net.forward = spy
    g = torch.Generator().manual_seed(0)
    generate(net, torch.tensor([[3, 1]]), 18, generator=g, use_cache=False, keep=4)
    windows = [n for _, n in calls]
    assert windows == [2, 3, 4, 5, 6, 7, 8, 4, 5, 6, 7, 8, 4, 5, 6, 7, 8, 4]  # one forward per new token
    calls.clear()
    generate(net, torch.tensor([[3, 1]]), 18, generator=g, use_cache=True, keep=4)
    prefill, step = (0, 2), [(k, 1) for k in range(2, 8)]
    again = [(0, 4)] + [(k, 1) for k in range(4, 8)]
    assert calls == [prefill, *step, *again, *again, (0, 4)]  # cache full at 8: re-encode the last 4


def test_chunked_cache_matches_one_pass():
    net = tiny_net(block_size=16)
    idx = torch.randint(0, 11, (2, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = net(idx)
        cache = net.new_cache(2)
        parts = [net(idx[:, :5], cache=cache), net(idx[:, 5:6], cache=cache), net(idx[:, 6:], cache=cache)]
    assert cache.length == 12
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=0, atol=1e-5)
    with pytest.raises(ConfigError, match="exceed block_size"):
        net(idx[:, :5], cache=cache)


def test_filter_logits_top_k_clamps_and_top_p_keeps_the_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2]]))
    assert torch.equal(filter_logits(logits, top_k=1000), logits)
    kept = lambda p: torch.isfinite(filter_logits(logits, top_p=p))[0].tolist()  # noqa: E731
    assert kept(0.5) == [True, False, False]
    assert kept(0.6) == [True, True, False]
    assert kept(0.81) == [True, True, True]
    assert torch.isfinite(filter_logits(logits, top_k=2))[0].tolist() == [True, True, False]
    with pytest.raises(ConfigError):
        filter_logits(logits, top_p=0.0)
    with pytest.raises(ConfigError):
        filter_logits(logits, top_k=0)


def test_next_token_draws_with_the_given_probabilities():
    probs = torch.tensor([0.5, 0.3, 0.2, 0.0])
    logits = probs.log().expand(200_000, 4)
    draws = next_token(logits, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=4) / len(draws)
    assert freq[3].item() == 0.0  # a zero-probability token is never drawn
    assert torch.allclose(freq, probs, atol=0.004)  # 4 standard errors at 200k draws
    hot = next_token(torch.tensor([[0.0, 5.0, 1.0]]), temperature=0.0)
    assert hot.tolist() == [1]


def test_warmup_cosine_schedule_values():
    assert warmup_cosine(0, 100, 2000, 0.1) == pytest.approx(0.01)
    assert warmup_cosine(99, 100, 2000, 0.1) == 1.0
    assert warmup_cosine(100, 100, 2000, 0.1) == 1.0
    assert warmup_cosine(1050, 100, 2000, 0.1) == pytest.approx(0.55)
    assert warmup_cosine(2000, 100, 2000, 0.1) == pytest.approx(0.1)
    assert warmup_cosine(5000, 100, 2000, 0.1) == pytest.approx(0.1)


TEN_STEPS = {"_target_": "genlab.models.schedules.warmup_cosine_schedule", "_partial_": True, "total_steps": 10}


def test_the_schedule_from_config_steps_the_learning_rate():
    model = GPT(text_spec(), n_layer=1, n_head=1, n_embd=8, lr=1e-3, scheduler={**TEN_STEPS, "warmup_steps": 2,
                                                                                 "min_lr": 1e-4})  # fmt: skip
    conf = model.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    assert conf["lr_scheduler"]["interval"] == "step"
    lrs = []
    for _ in range(12):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:3] == pytest.approx([5e-4, 1e-3, 1e-3]) and lrs[10:] == pytest.approx([1e-4, 1e-4])
    with pytest.raises(ConfigError, match=r"model.scheduler.min_lr must be in \[0, lr="):
        warmup_cosine_schedule(opt, min_lr=1.0, total_steps=10)


def test_weight_decay_on_matrices_only_no_biases_and_tied_head():
    model = GPT(text_spec(), n_layer=2, n_head=2, n_embd=16, bias=False, weight_decay=0.1, scheduler=TEN_STEPS)
    assert model.net.head.weight is model.net.tok_emb.weight
    assert all(getattr(m, "bias", None) is None for m in model.net.modules() if hasattr(m, "bias"))
    opt = model.configure_optimizers()["optimizer"]
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    assert len(no_decay["params"]) == 2 * 2 + 1  # two LayerNorm gains per block and the final one
    assert opt.defaults["betas"] == (0.9, 0.99)


def test_model_refuses_mismatched_or_non_sequence_data():
    with pytest.raises(ConfigError, match="block_size"):
        GPT(text_spec(block_size=8), block_size=16)
    with pytest.raises(ConfigError, match="1-D token sequences"):
        GPT(DataSpec((1, 8, 8), "levels", 17).to_dict())
    model = GPT(text_spec(), n_layer=1, n_head=1, n_embd=8)
    with pytest.raises(ConfigError, match="unconditional"):
        model.sample(2, condition=torch.tensor([0, 1]))


def test_start_symbol_given_must_be_in_the_vocabulary_and_the_default_falls_back_and_is_stored(caplog):
    assert GPT(text_spec(), n_layer=1, n_head=1, n_embd=8).start_id == VOCAB.index("\n")
    assert GPT(text_spec(), n_layer=1, n_head=1, n_embd=8, start_symbol="b").start_id == VOCAB.index("b")
    with pytest.raises(ConfigError, match="model.start_symbol must be a symbol of the vocabulary"):
        GPT(text_spec(), n_layer=1, n_head=1, n_embd=8, start_symbol="Z")
    with caplog.at_level("WARNING"):
        model = GPT(text_spec(vocab="xyz"), n_layer=1, n_head=1, n_embd=8)
    assert model.start_id == 0 and model.hparams["start_symbol"] == "x"
    assert "no newline" in caplog.text and "'x'" in caplog.text


def test_prompts_are_encoded_with_the_checkpoint_vocabulary():
    from genlab.sample import prompt_ids

    assert prompt_ids(VOCAB, None).tolist() == [0]  # no prompt: a newline
    assert prompt_ids(VOCAB, "").tolist() == [0]
    assert prompt_ids(VOCAB, "a b\\nc").tolist() == [2, 1, 3, 0, 4]  # "\n" typed on a command line
    with pytest.raises(ConfigError, match=r"not in the model's vocabulary: 'Z', 'x'\."):
        prompt_ids(VOCAB, "abxZ")
    with pytest.raises(ConfigError, match="has no newline"):
        prompt_ids("ab", "")


def torch_reference(net: Transformer, bias: bool) -> torch.nn.TransformerEncoder:
    """torch's own pre-norm encoder layers, causal-masked, carrying ``net``'s weights."""
    C, L = net.n_embd, net.n_layer
    layer = torch.nn.TransformerEncoderLayer(
        C,
        net.n_head,
        4 * C,
        0.0,
        activation=lambda h: torch.nn.functional.gelu(h, approximate="tanh"),
        batch_first=True,
        norm_first=True,
        bias=bias,
    )
    ref = torch.nn.TransformerEncoder(layer, L, enable_nested_tensor=False).eval()
    ours = {"self_attn.in_proj_weight": "attn.qkv.weight", "self_attn.in_proj_bias": "attn.qkv.bias",
            "self_attn.out_proj.weight": "attn.proj.weight", "self_attn.out_proj.bias": "attn.proj.bias",
            "linear1.weight": "fc.weight", "linear1.bias": "fc.bias", "linear2.weight": "fc_out.weight",
            "linear2.bias": "fc_out.bias", "norm1.weight": "ln_1.weight", "norm1.bias": "ln_1.bias",
            "norm2.weight": "ln_2.weight", "norm2.bias": "ln_2.bias"}  # fmt: skip
    params = dict(net.blocks.named_parameters())
    with torch.no_grad():
        for name, p in ref.layers.named_parameters():
            i, rest = name.split(".", 1)
            p.copy_(params[f"{i}.{ours[rest]}"])
    return ref


@pytest.mark.parametrize("bias", [True, False])
def test_logits_match_torch_transformer_encoder_layers_with_the_same_weights(bias):
    net = tiny_net(block_size=12, bias=bias, n_layer=3, n_head=4, n_embd=32)
    with torch.no_grad():  # non-trivial LayerNorm gains and biases, so a swapped parameter cannot pass
        for name, p in net.named_parameters():
            if p.ndim == 1:
                p.copy_(torch.randn_like(p) * 0.5 + (1.0 if "ln" in name and "weight" in name else 0.0))
    ref = torch_reference(net, bias)
    idx = torch.randint(0, 11, (3, 12), generator=torch.Generator().manual_seed(2))
    mask = torch.nn.Transformer.generate_square_subsequent_mask(12)
    with torch.no_grad():
        h = ref(net.embed(idx), mask=mask, is_causal=True)
        expected = torch.nn.functional.linear(net.ln_f(h), net.tok_emb.weight)
        got = net(idx)
    assert sum(1 for _ in ref.parameters()) == sum(1 for _ in net.blocks.parameters())
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_bfloat16_training_matmuls_stay_close_and_leave_evaluation_alone():
    net = tiny_net(block_size=8)
    idx = torch.randint(0, 11, (3, 8), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = net(idx)
    net.set_train_matmul_dtype("bfloat16")
    with torch.no_grad():
        assert torch.equal(net(idx), ref)  # evaluation keeps the model's precision
    net.train()
    out = net(idx)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=0, atol=0.02)
    out.square().sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in net.parameters())
    with pytest.raises(ConfigError, match="torch dtype"):
        net.set_train_matmul_dtype("bfloat17")


def test_one_position_steps_match_the_full_pass_for_batches_and_classes():
    net = tiny_net(block_size=12, num_classes=3)
    idx = torch.randint(0, 11, (3, 10), generator=torch.Generator().manual_seed(4))
    y = torch.tensor([0, 2, 1])
    with torch.no_grad():
        full = net(idx, condition=y)
        cache = net.new_cache(3)
        steps = [net(idx[:, :4], y, cache)] + [net(idx[:, t : t + 1], y, cache) for t in range(4, 10)]
        assert cache.plan is not None  # the one-position path ran
        with pytest.raises(ConfigError, match="class-conditional"):
            net(idx[:, :1], None, cache)
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=0, atol=1e-5)


def test_an_optimizer_that_refuses_its_settings_is_a_config_error_naming_the_key():
    sgd = {"_target_": "torch.optim.SGD", "_partial_": True, "betas": [0.9, 0.99]}  # betas left from AdamW
    model = GPT(text_spec(), n_layer=1, n_head=1, n_embd=8, optimizer=sgd, scheduler=TEN_STEPS)
    with pytest.raises(ConfigError, match=r"model.optimizer \(torch.optim.SGD\) refuses .*betas.*~model.optimizer"):
        model.configure_optimizers()
    model = GPT(text_spec(), n_layer=1, n_head=1, n_embd=8, weight_decay=-1.0, scheduler=TEN_STEPS)
    with pytest.raises(ConfigError, match="weight_decay"):
        model.configure_optimizers()
