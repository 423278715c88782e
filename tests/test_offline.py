"""The test suite never reaches the Hub, whatever the shell's offline variables say."""

import os


def test_offline_mode_is_forced() -> None:
    import huggingface_hub.constants

    assert os.environ["HF_HUB_OFFLINE"] == os.environ["TRANSFORMERS_OFFLINE"] == os.environ["HF_DATASETS_OFFLINE"] == "1"
    assert huggingface_hub.constants.HF_HUB_OFFLINE
