"""Two-stage fine-tuning on Lightning's BaseFinetuning."""
from __future__ import annotations

from lightning.pytorch.callbacks import BaseFinetuning

__all__ = ["TwoStageFinetuning"]


class TwoStageFinetuning(BaseFinetuning):
    """Stage 1 (epochs < head_epochs): backbone frozen, head trains. Stage 2: backbone trains too.

    The backbone's parameters sit in their own optimizer group from the start (with the lower
    backbone lr), so the lr schedule covers them without adding groups mid-run; frozen parameters
    have no gradient and AdamW leaves them untouched.
    """

    def __init__(self, head_epochs: int) -> None:
        super().__init__()
        self.head_epochs = head_epochs

    def freeze_before_training(self, pl_module) -> None:
        if self.head_epochs > 0:
            self.freeze(pl_module.backbone, train_bn=True)

    def finetune_function(self, pl_module, epoch: int, optimizer) -> None:
        if epoch >= self.head_epochs:
            early = {id(p) for m in pl_module._early for p in m.parameters()}
            for p in pl_module.backbone.parameters():
                p.requires_grad = id(p) not in early
