"""LPIPS from local files only: where it looks, what it says when the backbone is missing, and that
made backbone weights load into the right places and drive the SR perceptual loss."""
import pytest
import torch
import torchvision

from gan.sr.losses import lpips_loss, pixel_loss
from gan.metrics.lpips_loader import (
    BACKBONE_FILES,
    LPIPS_BACKBONE_ENV,
    LPIPSMetric,
    LPIPSWeightsError,
    find_lpips_backbone,
    load_lpips,
    lpips_unavailable_reason,
)


@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    """An empty torch hub cache and no environment override."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.delenv(LPIPS_BACKBONE_ENV, raising=False)
    return tmp_path


@pytest.fixture(scope="module")
def made_alexnet(tmp_path_factory):
    """A random torchvision AlexNet's state dict: stands in for the ImageNet file. Only its
    `features.*` entries are saved (all LPIPS reads; the classifier would add 220 MB to write)."""
    path = tmp_path_factory.mktemp("lpips") / "my-alexnet.pth"
    torch.manual_seed(0)
    model = torchvision.models.alexnet(weights=None)
    torch.save({k: v for k, v in model.state_dict().items() if k.startswith("features.")}, path)
    return path, model


def test_missing_backbone_says_which_file_to_put_where(no_weights):
    with pytest.raises(LPIPSWeightsError) as info:
        find_lpips_backbone("alex")
    message = str(info.value)
    expected = no_weights / "torch-home" / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    assert str(expected) in message
    assert "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth" in message and LPIPS_BACKBONE_ENV in message
    assert "never downloads" in message
    assert lpips_unavailable_reason("alex") == message
    with pytest.raises(LPIPSWeightsError, match="vgg16-397923af.pth"):
        load_lpips("vgg")


def test_env_var_must_name_an_existing_file(no_weights, monkeypatch):
    monkeypatch.setenv(LPIPS_BACKBONE_ENV, str(no_weights / "nowhere.pth"))
    with pytest.raises(LPIPSWeightsError, match=f"{LPIPS_BACKBONE_ENV}=.*nowhere.pth does not name an existing file"):
        find_lpips_backbone()


def test_made_weights_load_into_the_lpips_feature_slices(no_weights, made_alexnet, monkeypatch):
    path, model = made_alexnet
    monkeypatch.setenv(LPIPS_BACKBONE_ENV, str(path))
    assert find_lpips_backbone() == path and lpips_unavailable_reason() is None
    # the file is not the ImageNet one: its sha256 does not match the torchvision name
    with pytest.raises(LPIPSWeightsError, match="sha256 starts with"):
        load_lpips("alex")
    lpips = load_lpips("alex", verify_hash=False)
    features = dict(model.features.named_children())
    assert torch.equal(lpips.net.slice1[0].weight, features["0"].weight)
    assert torch.equal(lpips.net.slice5._modules["10"].weight, features["10"].weight)
    assert not any(p.requires_grad for p in lpips.parameters()) and not lpips.training
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.allclose(lpips(x, x).flatten(), torch.zeros(2))
    assert (lpips(x, x.flip(-1)).flatten() > 0).all()


def test_the_hub_cache_is_found_and_a_wrong_file_is_refused(no_weights, made_alexnet):
    path, _ = made_alexnet
    cache = no_weights / "torch-home" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    target = cache / BACKBONE_FILES["alex"]
    target.write_bytes(path.read_bytes())
    assert find_lpips_backbone("alex") == target
    torch.save(torchvision.models.squeezenet1_1(weights=None).features.state_dict(), target)  # no features. prefix
    with pytest.raises(LPIPSWeightsError, match="not the weights of torchvision's alexnet"):
        load_lpips("alex", verify_hash=False)
    target.write_bytes(b"not a checkpoint")
    with pytest.raises(LPIPSWeightsError, match="cannot be read"):
        load_lpips("alex", verify_hash=False)


def test_lpips_metric_and_loss(made_alexnet):
    path, _ = made_alexnet
    metric = LPIPSMetric("alex", backbone=path, verify_hash=False)
    a = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    distances = metric(a, a)
    assert distances.shape == (3,) and torch.allclose(distances, torch.zeros(3))
    assert (metric(a, a.flip(-1)) > 0).all() and metric.protocol()["backbone_file"] == str(path)
    out = (torch.rand(2, 3, 32, 32) * 2 - 1).requires_grad_(True)
    target = torch.rand(2, 3, 32, 32) * 2 - 1
    loss = lpips_loss(metric.model, out, target)
    loss.backward()
    assert loss.item() > 0 and out.grad.abs().sum() > 0
    assert pixel_loss(out, target, "l2") > 0 and pixel_loss(target, target) == 0


def test_sr_step_uses_lpips_when_weighted(made_alexnet, no_weights):
    from engine.distributed import DistributedInfo
    from engine.trainer import StepContext
    from gan.sr.config import SRConfig, SRLossConfig, SRModelConfig, SROptimConfig
    from gan.sr.step import SRStep

    model_config = SRModelConfig(input_size=8, output_size=32, channels=8, num_blocks=1, min_channels=4, critic_channels=4)
    config = SRConfig(model=model_config, loss=SRLossConfig(lpips_weight=0.5), optim=SROptimConfig(total_steps=10))
    with pytest.raises(LPIPSWeightsError, match="alexnet-owt-7be5be79.pth"):
        SRStep(config)  # no backbone anywhere: the step cannot be built, and says why
    path, _ = made_alexnet
    step = SRStep(config, lpips_model=load_lpips("alex", backbone=path, verify_hash=False))
    ctx = StepContext(torch.device("cpu"), DistributedInfo(), amp=False, grad_clip=0.0)
    ctx.models, ctx.optimizers = step.modules(), step.optimizers()
    ctx.scalers = {name: torch.amp.GradScaler("cpu", enabled=False) for name in ctx.optimizers}
    step.setup(ctx)
    hr = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    metrics = step.train_step({"image": hr}, 0)
    assert metrics["loss_lpips"] > 0
    assert metrics["g_loss"] == pytest.approx(metrics["loss_pixel"] + 0.5 * metrics["loss_lpips"], rel=1e-5)
