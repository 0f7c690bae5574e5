"""The model registry (fedheart.models): a model is one module and one conf/model yaml; specs are read from
the configuration, messages and files of every version (final_model.json and checkpoints written before it).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from flwr.app import Message

import client_app.app as client
import fedheart.models as models
from fedheart.config import CONF_DIR, ConfigError, load_config
from fedheart.model import build_model, get_weights
from fedheart.predict import load_model, predict_file
from fedheart.runs import CHECKPOINT, load_checkpoint
from fedheart.specs import ModelSpec
from launcher.loopback import LoopbackGrid
from server_app.federation import Federation, FederationError
from server_app.strategies import build_strategy
from tests.unit.model_folders import LOGREG, MLP, project_run, uci_tables, write_rows


def test_every_conf_model_yaml_is_a_registered_model_with_its_defaults() -> None:
    files = {p.stem: yaml.safe_load(p.read_text()) for p in sorted((CONF_DIR / "model").glob("*.yaml"))}
    assert set(files) == set(models.model_names()) and len(files) >= 2
    for stem, data in files.items():
        kind = models.model_type(stem)
        assert data.pop("name") == stem
        assert data == dataclasses.asdict(kind.params()), f"conf/model/{stem}.yaml and {kind.params} disagree"


@pytest.mark.parametrize(("overrides", "named", "says"), [
    ("model=mlp model.hidden=abc", "'model.hidden'", "int"),
    ("model=mlp model.layers=0", "'model.layers'", ">= 1"),
    ("model=mlp model.dropout=1.0", "'model.dropout'", "[0, 1)"),
    ("model=mlp +model.depth=3", "'model.depth'", "hidden, layers, dropout"),
    ("+model.hidden=3", "'model.hidden'", "logreg has no parameter"),
])
def test_a_wrong_model_parameter_is_named(overrides: str, named: str, says: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(overrides)
    assert named in str(err.value) and says in str(err.value)


def test_the_configured_spec_holds_only_its_models_parameters() -> None:
    assert load_config().model == ModelSpec("logreg", {})
    assert load_config("model=mlp model.hidden=8").model == ModelSpec("mlp", {"hidden": 8, "layers": 1,
                                                                               "dropout": 0.1})


def test_the_registry_and_the_configuration_check_load_no_torch() -> None:
    """The ServerApp and ``fedheart check-config`` check the model before anything imports torch."""
    code = ("import sys\nimport fedheart.models as m\nfrom fedheart.config import load_config\n"
            "from fedheart.specs import ModelSpec\nload_config('model=mlp')\n"
            "for name in m.model_names():\n    m.resolve(ModelSpec(name))\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


WIDE = '''
from dataclasses import dataclass

from fedheart.models.base import ModelType


@dataclass(frozen=True)
class Params:
    width: int = 3


def build(p, n_features):
    from torch import nn

    from fedheart.models.layers import Logit

    return Logit(first=nn.Linear(n_features, p.width), relu=nn.ReLU(), last=nn.Linear(p.width, 1))


MODEL = ModelType("wide", Params, build, linear_layers=lambda p: ["first", "last"])
'''


@pytest.fixture
def wide_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A new model added the documented way, one module and one yaml; the conf folder is a copy."""
    package = tmp_path / "models"
    package.mkdir()
    (package / "wide.py").write_text(WIDE)
    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    (conf / "model" / "wide.yaml").write_text("name: wide\nwidth: 3\n")
    monkeypatch.setattr(models, "__path__", [*models.__path__, str(package)])
    models.registry.cache_clear()
    yield conf
    models.registry.cache_clear()
    sys.modules.pop("fedheart.models.wide", None)


def test_a_new_model_is_one_module_and_one_yaml(wide_model: Path) -> None:
    cfg = load_config("model=wide model.width=5", conf_dir=wide_model)
    assert cfg.model == ModelSpec("wide", {"width": 5})
    model = build_model(cfg.model, 4, seed=1)
    assert model(torch.zeros(6, 4)).shape == (6,)
    assert {k: v.shape for k, v in get_weights(model).items()} == {
        "first.weight": (5, 4), "first.bias": (5,), "last.weight": (1, 5), "last.bias": (1,)}
    kind, params = models.resolve(cfg.model)
    assert kind.linear_layers(params) == ["first", "last"]
    with pytest.raises(ConfigError, match=r"'model\.width'"):
        load_config("model=wide model.width=abc", conf_dir=wide_model)


# -- files written before the registry ---------------------------------------------------------------------

# final_model.json's model_settings as the code before fedheart.models wrote them: every key for every model.
OLD_SETTINGS = {"logreg": {"name": "logreg", "hidden": 32, "layers": 1, "dropout": 0.0},
                "mlp": {"name": "mlp", "hidden": 16, "layers": 2, "dropout": 0.1}}


@pytest.mark.parametrize("spec", [LOGREG, MLP], ids=["logreg", "mlp"])
def test_an_old_final_model_json_still_loads_and_predicts_the_same(spec: ModelSpec, data_dir: Path,
                                                                   tmp_path: Path) -> None:
    tables = uci_tables(data_dir)
    folder = project_run(tmp_path / "run", tables, spec, steps=20)
    patients = write_rows(tmp_path / "patients.csv", Path(tables[0].path).read_text().splitlines()[:40])
    want = predict_file(folder, patients).probability
    meta_path = folder / "final_model.json"
    meta = json.loads(meta_path.read_text())
    assert meta["model_settings"] == models.full_spec(spec).to_dict()  # what a run writes now
    meta["model_settings"] = OLD_SETTINGS[spec.name]
    meta_path.write_text(json.dumps(meta))
    assert np.array_equal(predict_file(folder, patients).probability, want)
    del meta["model_settings"]  # older still: the name alone (the model's defaults)
    meta_path.write_text(json.dumps(meta))
    if spec == LOGREG:
        assert np.array_equal(predict_file(folder, patients).probability, want)
    else:
        with pytest.raises(ValueError, match=r"are not those of a mlp model"):  # 1 hidden layer of 32, not 2 of 16
            load_model(folder)


def test_a_saved_spec_keeps_what_is_not_a_legacy_key() -> None:
    assert models.saved_spec(OLD_SETTINGS["logreg"]) == ModelSpec("logreg", {})
    assert models.saved_spec({"name": "logreg", "depth": 2}) == ModelSpec("logreg", {"depth": 2})
    with pytest.raises(models.ModelSpecError, match=r"'model\.depth'"):
        models.resolve(models.saved_spec({"name": "logreg", "depth": 2}))


def _federation(overrides: str, fail_round: int | None = None) -> Federation:
    def fail(node: int, msg: Message) -> bool:
        return (node == 1 and msg.metadata.message_type == "train"
                and int(msg.content.config_records["config"]["server-round"]) == fail_round)

    cfg = load_config(f"rounds=2 train.local_steps=5 baselines=false {overrides}")
    grid = LoopbackGrid(client.app, [{"partition-id": i, "num-partitions": 4} for i in range(4)],
                        fail=fail if fail_round else None)
    return Federation(cfg, grid, build_strategy(cfg), run_id=1)


def test_a_checkpoint_made_before_the_registry_resumes(data_dir: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDHEART_DATA_DIR", str(data_dir))
    monkeypatch.setenv("FEDHEART_OUTPUT_DIR", str(tmp_path / "outputs"))
    crashed = _federation("output.run_name=old min_replies=4", fail_round=2)  # checkpoints round 1, dies in 2
    with pytest.raises(FederationError):
        crashed.run()
    path = crashed.run_dir.path / CHECKPOINT
    state = load_checkpoint(path)
    assert state["model"] == {"name": "logreg"}  # the spec, serialised generically
    state["model"] = "logreg"  # as checkpoints were written before fedheart.models: the name only
    torch.save(state, path)
    with pytest.raises(FederationError, match=r"model='logreg'.*'name': 'mlp'"):
        _federation(f"output.run_name=old model=mlp resume={crashed.run_dir.path}").run()
    resumed = _federation(f"output.run_name=old resume={crashed.run_dir.path}")
    resumed.run()
    rounds = [r["round"] for r in resumed.run_dir.read_metrics() if r["phase"] == "federation"]
    assert rounds == [1, 2] and resumed.history.last_round == 2
