import pytest

from trainkit import tiny_config


def test_config_errors_say_what_to_change(tmp_path):
    with pytest.raises(ValueError, match="stage_epochs"):
        tiny_config(tmp_path, tmp_path, stage_epochs=(0, 0, 0))
    with pytest.raises(ValueError, match="init_model or encoder/decoder"):
        tiny_config(tmp_path, tmp_path, init_model="m", encoder="e")
    with pytest.raises(ValueError, match="pretrains a fresh encoder"):
        tiny_config(tmp_path, tmp_path, encoder="e", encoder_pretrain_epochs=2)
