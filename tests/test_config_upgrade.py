"""A run saved before the per-protocol eval sections still loads (its config.yaml is upgraded), while a user's
old flat key fails with its new place."""
import pytest
import yaml

from selfsup.config import ConfigError, build_config, load_config


def test_a_saved_config_with_flat_eval_keys_loads_upgraded(tmp_path):
    saved = build_config("demo").model_dump(mode="json")
    saved["eval"] = {"enabled": True, "protocols": ["knn", "linear", "finetune"], "knn_k": [5, 20],
                     "knn_temperature": 0.1, "linear": False, "finetune_epochs": 3, "linear_sgd_lr": 0.2,
                     "baselines": True, "batch_size": 128, "report": True}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(saved))
    cfg = load_config(path)
    assert cfg.eval.protocols == ["knn", "finetune"]  # `linear: false` dropped the linear probe
    assert cfg.eval.knn.k == [5, 20] and cfg.eval.knn.temperature == 0.1
    assert cfg.eval.finetune.epochs == 3 and cfg.eval.linear_sgd.lr == 0.2


def test_an_old_flat_key_given_by_a_user_names_its_new_place():
    with pytest.raises(ConfigError, match=r"eval.knn_k is now eval.knn.k"):
        build_config("demo", ["eval.knn_k=[5]"])
