"""Configs read back from dicts refuse unknown keys and name the known ones."""
import pytest

from workbench.sae.model import SAEConfig
from workbench.analysis.scaling import ScalingConfig
from workbench.sae.train import TrainConfig


@pytest.mark.parametrize("cls, what", [(SAEConfig, "SAEConfig field"), (TrainConfig, "training setting"),
                                       (ScalingConfig, "scaling setting")])
def test_unknown_key_names_the_known_ones(cls, what):
    with pytest.raises(ValueError, match=rf"unknown {what}\(s\) \['bogus'\]: known ones are \[.*'"):
        cls.from_dict({"bogus": 1})


def test_round_trips_keep_values():
    cfg = SAEConfig("matryoshka", 16, 64, k=4, matryoshka_widths=(16, 64))
    assert SAEConfig.from_dict(cfg.to_dict()) == cfg
    train = TrainConfig(total_tokens=4096, batch_size=512, seed=3)
    assert TrainConfig.from_dict(train.to_dict()) == train
    scaling = ScalingConfig()
    assert ScalingConfig.from_dict(scaling.to_dict()) == scaling
