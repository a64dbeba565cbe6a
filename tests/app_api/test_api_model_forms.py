"""Every form the lab published food11.pth in loads (the whole pickle only on opt-in);
every wrong, truncated or mismatched file is a ModelLoadError that says what is wrong."""

from __future__ import annotations

import os
import pickle
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from app_api.model import FOOD11_CLASSES, ModelLoadError, build_mobilenet_v2, load_model


def _lab_net(num_classes: int = 11) -> nn.Module:
    torch.manual_seed(0)
    return build_mobilenet_v2(num_classes).eval()


@pytest.fixture(scope="module")
def lab_net():
    return _lab_net()


@pytest.fixture(scope="module")
def model_files(tmp_path_factory, lab_net):
    """The lab's forms and some broken files, written once for the module."""
    d = tmp_path_factory.mktemp("forms")
    files = {}
    files["state_dict"] = d / "food11_state_dict.pth"
    torch.save(lab_net.state_dict(), files["state_dict"])
    files["checkpoint"] = d / "food11_checkpoint.pth"
    torch.save({"epoch": 3, "model_state_dict": lab_net.state_dict()}, files["checkpoint"])
    files["pickle"] = d / "food11_pickle.pth"
    torch.save(lab_net, files["pickle"])
    files["torchscript"] = d / "food11_script.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(lab_net, torch.zeros(1, 3, 224, 224)), files["torchscript"])
    files["wrong_classes"] = d / "ten_classes.pth"
    torch.save(_lab_net(10).state_dict(), files["wrong_classes"])
    from torchvision.models import resnet18

    files["resnet18"] = d / "resnet18.pth"
    torch.save(resnet18(weights=None, num_classes=11).state_dict(), files["resnet18"])
    data = files["state_dict"].read_bytes()
    files["truncated"] = d / "truncated.pth"
    files["truncated"].write_bytes(data[: len(data) // 2])
    files["random"] = d / "random.pth"
    files["random"].write_bytes(os.urandom(100_000))
    files["empty"] = d / "empty.pth"
    files["empty"].write_bytes(b"")
    files["not_a_model"] = d / "list.pth"
    torch.save([1, 2, 3], files["not_a_model"])
    files["script_truncated"] = d / "script_truncated.pt"
    sdata = files["torchscript"].read_bytes()
    files["script_truncated"].write_bytes(sdata[: len(sdata) - 5000])
    return files


def _reference_probs(net: nn.Module, images: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        return torch.softmax(net((x - mean) / std), dim=1).numpy()


@pytest.mark.parametrize(
    "form,expected",
    [
        ("state_dict", "state_dict"),
        ("checkpoint", "state_dict"),
        ("torchscript", "torchscript"),
    ],
)
def test_lab_forms_load_and_match_the_lab_network(model_files, lab_net, form, expected):
    model = load_model(model_files[form], device="cpu")
    assert model.info.form == expected
    assert model.class_names == FOOD11_CLASSES
    assert len(model.info.sha256) == 64
    images = np.random.default_rng(1).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    probs, feats = model.infer(images)
    np.testing.assert_allclose(probs, _reference_probs(lab_net, images), atol=2e-4)
    assert feats.shape == (3, 1280)


def test_whole_pickle_is_refused_without_opt_in_and_the_message_says_how(model_files):
    with pytest.raises(ModelLoadError) as e:
        load_model(model_files["pickle"], device="cpu")
    msg = str(e.value)
    assert "FOOD11_ALLOW_PICKLE=1" in msg and "--allow-pickle" in msg


def test_whole_pickle_loads_with_opt_in(model_files, lab_net):
    model = load_model(model_files["pickle"], device="cpu", allow_pickle=True)
    assert model.info.form == "pickled-module"
    images = np.full((1, 224, 224, 3), 128, dtype=np.uint8)
    probs, _ = model.infer(images)
    np.testing.assert_allclose(probs, _reference_probs(lab_net, images), atol=2e-4)


def test_demo_archive_loads_with_its_metadata(demo_model):
    model = load_model(demo_model, device="cpu")
    assert model.info.form == "gourmetgram-archive"
    assert model.info.version == "demo-effnet-lite0-1"
    assert model.info.preprocessing.interpolation == "bicubic"
    assert model.info.preprocessing.mean == (0.5, 0.5, 0.5)


def test_version_override(model_files):
    assert load_model(model_files["state_dict"], device="cpu", version="v7").info.version == "v7"


@pytest.mark.parametrize(
    "name,words",
    [
        ("wrong_classes", "wrong class count"),
        ("resnet18", "do not fit this architecture"),
        ("truncated", "truncated or corrupt"),
        ("random", "truncated or corrupt"),
        ("empty", "truncated or corrupt"),
        ("not_a_model", "not a state_dict"),
        ("script_truncated", "corrupt"),
    ],
)
def test_bad_model_files_fail_with_a_clear_message(model_files, name, words):
    with pytest.raises(ModelLoadError) as e:
        load_model(model_files[name], device="cpu", allow_pickle=True)
    assert words in str(e.value)
    assert str(model_files[name]) in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(tmp_path / "nope.pth", device="cpu")


def test_cuda_asked_for_but_absent(model_files):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(ModelLoadError, match="no CUDA device"):
        load_model(model_files["state_dict"], device="cuda")


def test_random_bytes_are_not_mistaken_for_a_pickle(model_files):
    """No advice to opt in to unpickling for a file that is not a pickle at all."""
    with pytest.raises(ModelLoadError) as e:
        load_model(model_files["random"], device="cpu")
    assert "ALLOW_PICKLE" not in str(e.value)


@pytest.mark.parametrize(
    "data",
    [b"\x80\x02this is not a model" * 100, b"\x80\x04\x95" + bytes(range(256)) * 8, b"PK\x03\x04junk"],
    ids=["pickle-magic-then-garbage", "protocol4-garbage", "zip-magic-then-garbage"],
)
def test_garbage_after_a_valid_magic_is_a_clear_error(tmp_path, data):
    path = tmp_path / "food11.pth"
    path.write_bytes(data)
    with pytest.raises(ModelLoadError, match="truncated or corrupt"):
        load_model(path, device="cpu")


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo this file ran code",))


@pytest.mark.parametrize("form", ["torch_save", "plain_pickle"])
def test_a_file_that_runs_code_is_refused_as_such(tmp_path, form):
    """Said as it is ("runs code"), not as a damaged file."""
    path = tmp_path / "food11.pth"
    if form == "torch_save":
        torch.save({"weights": _RunsCode()}, path)
    else:
        path.write_bytes(pickle.dumps(_RunsCode(), protocol=4))
    with pytest.raises(ModelLoadError) as e:
        load_model(path, device="cpu")
    assert "runs code" in str(e.value) and "truncated or corrupt" not in str(e.value)
