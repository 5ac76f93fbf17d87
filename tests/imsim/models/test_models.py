from __future__ import annotations

import numpy as np
import pytest
import torch

from imsim.models import EmbeddingModule, build_network
from imsim.models.autoencoder import ConvAutoencoder
from imsim.models.resnet_cifar import BasicBlock, ResNetCifar


@pytest.mark.parametrize(("depth", "params"), [(20, 0.27e6), (32, 0.46e6), (56, 0.85e6)])
def test_resnet_depths_match_the_paper_parameter_counts(depth: int, params: float) -> None:
    # He et al. 2016, Table 6: 0.27M, 0.46M and 0.85M parameters (option A adds none).
    net = ResNetCifar(depth=depth)
    n = sum(p.numel() for p in net.parameters())
    assert abs(n - params) / params < 0.03
    blocks = [m for m in net.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 3 * (depth - 2) // 6


def test_option_a_shortcut_subsamples_and_zero_pads() -> None:
    block = BasicBlock(16, 32, stride=2)
    x = torch.randn(2, 16, 8, 8)
    s = block.shortcut(x)
    assert s.shape == (2, 32, 4, 4)
    assert torch.equal(s[:, 8:24], x[:, :, ::2, ::2])
    assert s[:, :8].abs().sum() == 0 and s[:, 24:].abs().sum() == 0


def test_resnet_embedding_head_and_projection() -> None:
    net = ResNetCifar(depth=20, embedding_dim=32, head="linear", projection_dim=16).eval()
    emb = net(torch.randn(3, 3, 32, 32))
    assert emb.shape == (3, 32)
    assert net.project(emb).shape == (3, 16)
    study = ResNetCifar(depth=20).eval()
    assert (study(torch.randn(3, 3, 32, 32)) >= 0).all()  # pooled after ReLU, as in the study
    with pytest.raises(ValueError):
        ResNetCifar(depth=44)


def test_autoencoder_latent_and_reconstruction_range() -> None:
    ae = ConvAutoencoder().eval()
    z = ae(torch.randn(4, 3, 32, 32) * 3)
    assert z.shape == (4, 256)
    r = ae.decode(z)
    assert r.shape == (4, 3, 32, 32)
    assert r.min() >= 0 and r.max() <= 1  # the range the [0, 1] target lives in


def test_embedding_module_takes_uint8_nhwc_and_returns_unit_vectors() -> None:
    arch = {"name": "resnet_cifar", "depth": 20, "embedding_dim": 64, "head": "linear"}
    m = EmbeddingModule(build_network(arch)).eval()
    imgs = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), np.uint8))
    out = m(imgs)
    assert out.dtype == torch.float32 and out.shape == (5, 64)
    np.testing.assert_allclose(out.norm(dim=1).detach().numpy(), 1.0, rtol=1e-5)
    # Other input sizes are resized inside the module.
    big = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (2, 48, 48, 3), np.uint8))
    assert m(big).shape == (2, 64)


def test_vit_tokens_shapes_and_parameter_count() -> None:
    from imsim.models.vit_cifar import VIT_SIZES, ViTCifar

    arch = {"name": "vit_cifar", "size": "tiny", **VIT_SIZES["tiny"], "embedding_dim": 64}
    net = build_network(arch).eval()
    assert isinstance(net, ViTCifar) and len(net.encoder.layers) == 4
    assert net.pos_embed.shape == (1, 8 * 8 + 1, 128)  # 4x4 patches of 32x32, plus class token
    # Per layer: attention 4 w^2 + 4 w, MLP 8 w^2 + 5 w, two LayerNorms 4 w (w = 128).
    w = 128
    per_layer = 4 * w * w + 4 * w + 8 * w * w + 5 * w + 4 * w
    n = sum(p.numel() for p in net.parameters())
    assert n == 4 * per_layer + (3 * 16 * w + w) + w + 65 * w + 2 * w + (w * 64 + 64)
    x = torch.randn(3, 3, 32, 32)
    assert net(x).shape == (3, 64)
    # The class token carries the image: permuting images in the batch permutes embeddings.
    torch.testing.assert_close(net(x[[2, 0, 1]]), net(x)[[2, 0, 1]], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="patch 5"):
        ViTCifar(patch=5)


def test_vit_embedding_module_uses_the_fused_attention_path_in_inference() -> None:
    from imsim.models.vit_cifar import VIT_SIZES

    arch = {"name": "vit_cifar", **VIT_SIZES["tiny"], "embedding_dim": 16}
    module = EmbeddingModule(build_network(arch)).eval()
    x = torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8)
    with torch.inference_mode():
        fast = module(x)
        torch.backends.mha.set_fastpath_enabled(False)
        try:
            slow = module(x)
        finally:
            torch.backends.mha.set_fastpath_enabled(True)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(fast.numpy(), axis=1), 1.0, atol=1e-6)
