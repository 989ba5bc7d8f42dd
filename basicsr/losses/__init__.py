"""Training losses (registered in LOSS_REGISTRY)."""

from basicsr.losses.basic_loss import CharbonnierLoss, L1Loss, MSELoss, PSNRLoss

__all__ = ['CharbonnierLoss', 'L1Loss', 'MSELoss', 'PSNRLoss']
