"""The RQ-VAE model: shapes, the quantizer loss against a hand computation, where gradients go."""
from __future__ import annotations

import pytest
import torch

from pipeline.rqvae import RQVAE, RQVAEConfig, mlp, nearest


def tiny(beta: float = 0.25) -> RQVAE:
    """2-d latents, 2 levels of 2 codes each, codebooks set by hand."""
    model = RQVAE(RQVAEConfig(in_dim=2, hidden=[], code_dim=2, levels=2, codebook_size=2, beta=beta))
    with torch.no_grad():
        model.codebooks.copy_(torch.tensor([[[1.0, 0.0], [0.0, 2.0]],
                                            [[0.1, 0.1], [-0.5, 0.0]]]))
    return model


def test_mlp_has_relu_between_layers_only_and_no_hidden_is_linear():
    net = mlp([8, 6, 4, 3])
    kinds = [type(m).__name__ for m in net]
    assert kinds == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]
    assert [type(m).__name__ for m in mlp([8, 3])] == ["Linear"]
    model = RQVAE(RQVAEConfig(in_dim=8, hidden=[6, 4], code_dim=3))
    assert [m.out_features for m in model.encoder if isinstance(m, torch.nn.Linear)] == [6, 4, 3]
    assert [m.out_features for m in model.decoder if isinstance(m, torch.nn.Linear)] == [4, 6, 8]


def test_nearest_is_squared_l2_with_ties_to_the_lowest_index():
    book = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 5.0]])
    r = torch.tensor([[0.9, 0.1], [0.2, 3.0], [0.0, -1.0]])
    assert nearest(r, book).tolist() == [1, 3, 0]


def test_quantizer_codes_residuals_and_loss_match_a_hand_computation():
    model = tiny(beta=0.25)
    z = torch.tensor([[0.9, 0.2], [0.1, 1.6], [0.6, 0.1]], requires_grad=True)
    z_q, codes, quant, res = model.quantize(z)
    # level 1: nearest of (1,0), (0,2); level 2 on what is left: nearest of (0.1,0.1), (-0.5,0)
    assert codes.tolist() == [[0, 0], [1, 0], [0, 1]]
    e1 = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 0.0]])
    e2 = torch.tensor([[0.1, 0.1], [0.1, 0.1], [-0.5, 0.0]])
    r1, r2 = z.detach(), z.detach() - e1
    torch.testing.assert_close(res[:, 0], r1)
    torch.testing.assert_close(res[:, 1], r2)
    torch.testing.assert_close(z_q, e1 + e2)
    per_level = [((r - e) ** 2).sum(1).mean() for r, e in ((r1, e1), (r2, e2))]
    torch.testing.assert_close(quant, (1 + 0.25) * sum(per_level))


def test_codebook_learns_from_the_first_term_and_encoder_from_the_beta_term():
    beta, n = 0.25, 3
    model = tiny(beta)
    z = torch.tensor([[0.9, 0.2], [0.1, 1.6], [0.6, 0.1]], requires_grad=True)
    _, codes, quant, _ = model.quantize(z)
    quant.backward()
    e1 = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 0.0]])
    e2 = torch.tensor([[0.1, 0.1], [0.1, 0.1], [-0.5, 0.0]])
    r1, r2 = z.detach(), z.detach() - e1
    # d/dz beta*||r - sg(e)||^2 over both levels (r2 = z - sg(e1)); the first term gives z nothing
    torch.testing.assert_close(z.grad, 2 * beta / n * ((r1 - e1) + (r2 - e2)))
    # d/de ||sg(r) - e||^2, summed over the items that picked each code; beta gives the codes nothing
    want = torch.zeros(2, 2, 2)
    for level, (r, e) in enumerate(((r1, e1), (r2, e2))):
        for i in range(n):
            want[level, codes[i, level]] += 2 / n * (e[i] - r[i])
    torch.testing.assert_close(model.codebooks.grad, want)


def test_beta_zero_leaves_the_encoder_without_quantizer_gradient():
    model = tiny(beta=0.0)
    z = torch.tensor([[0.9, 0.2], [0.1, 1.6]], requires_grad=True)
    model.quantize(z)[2].backward()
    assert torch.count_nonzero(z.grad) == 0
    assert torch.count_nonzero(model.codebooks.grad) > 0


def test_reconstruction_reaches_the_encoder_straight_through_and_not_the_codebooks():
    torch.manual_seed(0)
    model = RQVAE(RQVAEConfig(in_dim=6, hidden=[5], code_dim=4, levels=2, codebook_size=3))
    _, _, losses = model(torch.randn(10, 6))
    losses["recon"].backward()
    assert model.codebooks.grad is None or torch.count_nonzero(model.codebooks.grad) == 0
    assert torch.count_nonzero(model.encoder[0].weight.grad) > 0
    assert set(losses) == {"total", "recon", "quant"}
    torch.testing.assert_close(losses["total"], losses["recon"] + losses["quant"])


@pytest.mark.parametrize("hidden", [[], [16, 8]])
def test_forward_shapes_and_inference_codes_agree(hidden):
    torch.manual_seed(0)
    cfg = RQVAEConfig(in_dim=12, hidden=hidden, code_dim=4, levels=3, codebook_size=5)
    model = RQVAE(cfg)
    x = torch.randn(7, 12)
    x_hat, codes, _ = model(x)
    assert x_hat.shape == (7, 12)
    assert codes.shape == (7, 3) and codes.dtype == torch.long
    assert codes.min() >= 0 and codes.max() < 5
    res, res_codes = model.residuals(x)
    assert res.shape == (7, 3, 4)
    torch.testing.assert_close(res[:, 0], model.encoder(model.standardize(x)).detach())
    assert torch.equal(res_codes, codes) and torch.equal(model.encode_codes(x), codes)


def test_codebook_gradient_is_bitwise_reproducible_on_several_threads():
    # The backward of plain indexing (book[idx]) adds rows with CPU atomics in a different order each
    # run; training is only reproducible if the quantizer avoids it.
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(0)
        # few codes, many rows: many threads add into the same code row, where the order shows
        model = RQVAE(RQVAEConfig(in_dim=16, hidden=[], code_dim=16, levels=2, codebook_size=2))
        x = torch.randn(4096, 16)
        grads = set()
        for _ in range(20):
            model.zero_grad()
            model(x)[2]["total"].backward()
            grads.add(model.codebooks.grad.numpy().tobytes())
    finally:
        torch.set_num_threads(before)
    assert len(grads) == 1


def test_bfloat16_training_forward_searches_codes_in_float32():
    # Two codes 2^-10 and 2^-9 from r = e_1: float32 picks code 0, while the same search in bfloat16
    # (8 bits) rounds the products to a tie-breaking 2.0 and picks code 1.
    model = RQVAE(RQVAEConfig(in_dim=4, hidden=[], code_dim=4, levels=1, codebook_size=2))
    with torch.no_grad():
        model.encoder[0].weight.copy_(torch.eye(4))
        model.encoder[0].bias.zero_()
        model.codebooks.copy_(torch.tensor([[[1 + 2**-10, 0, 0, 0], [1 - 2**-9, 0, 0, 0]]]))
    x = torch.tensor([[1.0, 0, 0, 0]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert nearest(x, model.codebooks[0]).item() == 1  # what a search under autocast would give
    x_hat, codes, losses = model(x, bfloat16=True)
    assert codes.item() == 0
    assert x_hat.dtype == losses["total"].dtype == torch.float32
    losses["total"].backward()
    assert model.codebooks.grad.dtype == torch.float32 and model.encoder[0].weight.grad.abs().sum() > 0
