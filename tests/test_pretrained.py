"""torchvision's AlexNet in tinyalex (tinyalex.pretrained, net.alexnet_owt): its state_dict
imported under tinyalex's names gives the same logits and the same backward, layer by layer.

torchvision itself is not needed (its wheel does not import here, and no weights can be
downloaded): ``TorchvisionAlexNet`` rebuilds torchvision/models/alexnet.py's module tree in
torch.nn, with the same keys in the same order, and random weights stand in for the trained.
"""

from __future__ import annotations

import numpy as np
import pytest

from tinyalex import pretrained
from tinyalex.gradcheck import rel_error
from tinyalex.net import AdaptiveAvgPool2D, adaptive_bins, build

torch = pytest.importorskip("torch", reason="PyTorch (CPU) is the oracle of these tests; "
                                            "pip install torch==2.13.0")
nn = torch.nn


class TorchvisionAlexNet(nn.Module):
    """torchvision.models.AlexNet's structure (features / avgpool / classifier), verbatim
    in its layer order, so that its state_dict keys are torchvision's."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True),
            nn.Dropout(p=dropout), nn.Linear(4096, 4096), nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x):
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def torchvision_model(dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    return TorchvisionAlexNet().to(dtype).eval()


@pytest.fixture(scope="module")
def pth32(tmp_path_factory):
    """A float32 torchvision AlexNet with random weights and its saved .pth."""
    model = torchvision_model(torch.float32)
    path = tmp_path_factory.mktemp("tv") / "alexnet-owt-random.pth"
    torch.save(model.state_dict(), path)
    return model, path


def test_owt_has_torchvisions_layers_and_count():
    net = build("alexnet-owt", 1000)
    assert net.num_params() == 61_100_840
    assert net.num_params() == sum(p.numel() for p in TorchvisionAlexNet().parameters())
    assert list(pretrained.to_torchvision(net)) == list(TorchvisionAlexNet().state_dict())


def compare(model, net, x, tol):
    """Logits, every layer's output and, for a random dlogits, the gradient reaching every
    layer's input (layer by layer, as torch's autograd and tinyalex's backward give them),
    every parameter's gradient and the input's, within relative ``tol``."""
    for m in model.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False  # keep each layer's output, to read its gradient
    modules = [m for m in [*model.features, model.avgpool, nn.Flatten(), *model.classifier]
               if not isinstance(m, nn.Dropout)]  # eval mode: dropout is the identity
    ours = [(name, layer) for name, layer in net.layers if not name.startswith("drop")]
    assert len(ours) == len(modules)
    xt = torch.from_numpy(x).requires_grad_(True)
    hs, h = [xt], xt
    for module in modules:
        h = module(h)
        h.retain_grad()
        hs.append(h)
    dlogits = np.random.default_rng(1).standard_normal(tuple(h.shape)).astype(x.dtype)
    h.backward(torch.from_numpy(dlogits))
    # the whole net: logits, then one backward from dlogits to every parameter and the input
    assert rel_error(net.forward(x, train=False), h.detach().numpy()) < tol
    assert rel_error(net.backward(dlogits), xt.grad.numpy()) < tol
    grads = {pretrained.torchvision_key(k): v for k, v in net.grads.items()}
    for key, p in model.named_parameters():
        assert rel_error(grads[key], p.grad.numpy()) < tol, key
    # layer by layer: each layer's forward on torch's input to it, and its backward of
    # torch's gradient at its output against torch's gradient at its input
    for (name, layer), t_in, t_out in zip(ours, hs[:-1], hs[1:], strict=True):
        y = layer.forward(t_in.detach().numpy(), False)
        assert rel_error(y, t_out.detach().numpy()) < tol, name
        dx = layer.backward(t_out.grad.numpy())
        assert rel_error(dx, t_in.grad.numpy()) < tol, f"{name} backward"


@pytest.mark.parametrize("size", [224, 256])
def test_float64_logits_and_backward_match(tmp_path, size):
    """float64: the same function and the same gradients to 1e-10; 256 px exercises the
    adaptive pool (pool5 7x7 -> 6x6 with overlapping bins), 224 px its identity."""
    model = torchvision_model(torch.float64, seed=2)
    path = tmp_path / "tv64.pth"
    torch.save(model.state_dict(), path)
    net = pretrained.from_torchvision(pretrained.read_pth(path), dtype=np.float64)
    if size != 224:  # the same weights in a net built for another input size
        other = build("alexnet-owt", 1000, input_size=size, dtype=np.float64)
        other.load_params(net.params)
        net = other
    x = np.random.default_rng(0).standard_normal((2, 3, size, size))
    compare(model, net, x, 1e-10)


def test_float32_import_command_matches(pth32, tmp_path):
    """The command's checkpoint (float32) computes torchvision's logits and backward to 1e-5."""
    from tinyalex import checkpoint
    from tinyalex.commands.weights import main

    model, path = pth32
    out = tmp_path / "owt.npz"
    assert main(["import-torchvision", str(path), str(out)]) == 0
    ckpt = checkpoint.load(out)
    assert ckpt.meta["data"]["preprocessing"] == "torchvision"
    assert ckpt.meta["classes"][0] == "n01440764" and ckpt.meta["names"][0] == "tench"
    net = checkpoint.build_net(ckpt)
    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    compare(model, net, x, 1e-5)


def test_export_round_trip_is_exact(pth32, tmp_path):
    from tinyalex.commands.weights import main

    model, path = pth32
    out, back = tmp_path / "owt.npz", tmp_path / "back.pth"
    assert main(["import-torchvision", str(path), str(out)]) == 0
    assert main(["export-torchvision", str(out), str(back)]) == 0
    again = TorchvisionAlexNet()
    again.load_state_dict(torch.load(back, weights_only=True))
    for (k, a), (k2, b) in zip(model.state_dict().items(), again.state_dict().items(),
                               strict=True):
        assert k == k2 and torch.equal(a, b), k


def test_preprocessing_is_torchvisions(pth32, tmp_path):
    """(pixel / 255 - m) / s, centre 224 of 256: the checkpoint's augmenter gives it."""
    from tinyalex import checkpoint
    from tinyalex.commands.weights import main

    out = tmp_path / "owt.npz"
    main(["import-torchvision", str(pth32[1]), str(out)])
    aug = pretrained.augmenter(checkpoint.load(out))
    img = np.random.default_rng(0).integers(0, 256, (1, 256, 256, 3), dtype=np.uint8)
    m, s = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    want = ((img[:, 16:240, 16:240] / 255.0 - m) / s).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(aug.center(img), want, rtol=1e-5, atol=1e-5)
    assert aug.ten_crop(img).shape == (10, 1, 3, 224, 224)


def test_refuses_what_is_not_a_state_dict_of_tensors(tmp_path, capsys):
    from tinyalex.commands import cli
    from tinyalex.commands.weights import main

    path = tmp_path / "mixed.pth"
    torch.save({"features.0.weight": torch.zeros(1), "note": "hello"}, path)
    assert cli.run(main, ["import-torchvision", str(path), str(tmp_path / "o.npz")]) == 2
    assert "not a tensor: note" in capsys.readouterr().err

    from fractions import Fraction

    evil = tmp_path / "evil.pth"
    torch.save({"x": Fraction(1, 3)}, evil)  # any class but tensors: weights_only refuses
    assert cli.run(main, ["import-torchvision", str(evil), str(tmp_path / "o.npz")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "not a weights-only state_dict" in err
    assert err.count("\n") == 1

    wrong = tmp_path / "wrong.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, wrong)
    assert cli.run(main, ["import-torchvision", str(wrong), str(tmp_path / "o.npz")]) == 2
    assert "missing keys ['classifier.1.bias'" in capsys.readouterr().err


def test_adaptive_bins_are_pytorchs():
    """Bins by PyTorch's rule, and the layer equals nn.AdaptiveAvgPool2d for 5, 6, 7, 13 px."""
    assert adaptive_bins(6, 6) == [(i, i + 1) for i in range(6)]
    assert adaptive_bins(7, 6)[:2] == [(0, 2), (1, 3)]
    rng = np.random.default_rng(0)
    for side in (5, 6, 7, 13):
        x = rng.standard_normal((2, 3, side, side))
        layer, ref = AdaptiveAvgPool2D(6), nn.AdaptiveAvgPool2d(6)
        xt = torch.from_numpy(x).requires_grad_(True)
        yt = ref(xt)
        dy = rng.standard_normal(yt.shape)
        yt.backward(torch.from_numpy(dy))
        assert rel_error(layer.forward(x), yt.detach().numpy()) < 1e-12
        assert rel_error(layer.backward(dy), xt.grad.numpy()) < 1e-12


def test_predict_prints_imagenet_names(pth32, tmp_path, real_data, capsys):
    """predict on a full-size ImageNet photo with the imported checkpoint: one line of five
    ImageNet-1k names (random weights, so which names is meaningless)."""
    from tinyalex.commands import predict
    from tinyalex.commands.weights import main
    from tinyalex.data.subsets import imagenet_classes

    out = tmp_path / "owt.npz"
    main(["import-torchvision", str(pth32[1]), str(out)])
    photo = sorted((real_data / "imagenet-samples-100").glob("*.JPEG"))[0]
    capsys.readouterr()
    assert predict.main([str(out), str(photo)]) == 0
    line = capsys.readouterr().out.strip()
    names = {name for _, name in imagenet_classes().values()}
    shown = [part.split("% ", 1)[1] for part in line.split(": ", 1)[1].split(" | ")]
    assert len(shown) == 5 and set(shown) <= names


def test_trained_weights_are_found_the_data_way(pth32, tmp_path, monkeypatch):
    """A downloaded alexnet-owt*.pth in $TINYALEX_DATA is found by the data lookup
    (find_kind("weights"), as notebook 12 does) and imported once into a work folder."""
    from tinyalex.data.find import find_kind

    data = tmp_path / "data"
    data.mkdir()
    (data / "alexnet-owt-7be5be79.pth").symlink_to(pth32[1])
    monkeypatch.setenv("TINYALEX_DATA", str(data))
    found = find_kind("weights", log=lambda _: None)
    assert found == data / "alexnet-owt-7be5be79.pth"
    ckpt = pretrained.open_trained(found, tmp_path / "work")
    assert ckpt.meta["source"]["kind"] == "torchvision"
    stamp = ckpt.path.stat().st_mtime_ns
    assert pretrained.open_trained(found, tmp_path / "work").path.stat().st_mtime_ns == stamp


def test_evaluate_takes_an_imported_checkpoint(pth32, tmp_path):
    """evaluate on a (tiny) ImageNet-1k prepared folder: the errors are those of
    torchvision's model on torchvision's preprocessing of the same images."""
    from tinyalex.commands.evaluate import evaluate_checkpoint
    from tinyalex.commands.weights import main
    from tinyalex.data.cache import write_prepared

    model, path = pth32
    out = tmp_path / "owt.npz"
    main(["import-torchvision", str(path), str(out)])
    wnids, names = pretrained.imagenet_labels(1000)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 256, 256, 3), dtype=np.uint8)
    x = (images[:, 16:240, 16:240] / 255.0 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    with torch.no_grad():
        logits = model(torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float32))).numpy()
    top5 = np.argsort(-logits, axis=1)[:, :5]
    labels = np.array([top5[0, 0], top5[1, 3], 7, 8, top5[4, 0], 9])  # 2 top-1, 3 top-5 hits
    prepared = write_prepared(tmp_path / "prep", images, labels, images, labels,
                              {"classes": wnids, "names": names, "kind": "test",
                               "source": "tests", "subset": "all"})
    result = evaluate_checkpoint(out, data=str(prepared), progress=False, log=lambda _: None)
    hit5 = np.mean([labels[i] in top5[i] for i in range(6)])
    assert result["centre"]["top1_err"] == pytest.approx(1 - np.mean(top5[:, 0] == labels))
    assert result["centre"]["top5_err"] == pytest.approx(1 - hit5)


def test_without_torch_says_so(tmp_path, monkeypatch, capsys):
    """Reading a .pth needs torch: without it, one line that says how to get it, exit 2."""
    import sys

    from tinyalex.commands import cli
    from tinyalex.commands.weights import main

    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    pth = tmp_path / "alexnet-owt.pth"
    pth.write_bytes(b"x")
    assert cli.run(main, ["import-torchvision", str(pth), str(tmp_path / "o.npz")]) == 2
    err = capsys.readouterr().err
    assert "needs PyTorch" in err and "whl/cpu" in err and err.count("\n") == 1
