"""Mixed precision through the Trainer: bf16-mixed and 16-mixed steps run and match fp32 closely."""
import lightning as L
import pytest
import torch

from data_modules import VideoBertDataModule
from videobert.module import VideoBertModule
from videobert.testing import make_feature_shards, make_text_and_vocab


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("precision")
    make_feature_shards(root / "train", [6, 6], sentences=4)
    return root, *make_text_and_vocab(root, root / "train")


class FirstLoss(L.Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx == 0:
            self.loss = float(outputs["loss"])


def first_loss(data, precision: str) -> float:
    root, vocab_txt, npz = data
    L.seed_everything(0)
    dm = VideoBertDataModule(train_shards=str(root / "train"), tokenizer=vocab_txt, visual_vocab=npz, batch_size=8,
                             num_workers=0, batches_per_epoch=2, max_text_tokens=12, max_visual_words=6)
    model = VideoBertModule(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_positions=24,
                            dropout=0.0, warmup_steps=1)
    rec = FirstLoss()
    L.Trainer(precision=precision, max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, limit_val_batches=0, callbacks=[rec]).fit(model, dm)
    return rec.loss


@pytest.mark.filterwarnings("ignore:.*16-mixed.*")
def test_bf16_and_fp16_mixed_match_fp32(data):
    fp32 = first_loss(data, "32-true")
    for precision in ("bf16-mixed", "16-mixed"):  # on a CPU Lightning runs 16-mixed as bf16; on a GPU as fp16
        loss = first_loss(data, precision)
        assert torch.isfinite(torch.tensor(loss)) and loss == pytest.approx(fp32, rel=0.02), precision
