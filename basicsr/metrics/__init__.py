"""Image quality metrics: PSNR, standard SSIM and the EFNet reference's 3-D SSIM (numpy and torch)."""

from basicsr.metrics.psnr_ssim import (
    calculate_psnr,
    calculate_psnr_pt,
    calculate_ssim,
    calculate_ssim_3d,
    calculate_ssim_3d_pt,
    calculate_ssim_pt,
)

__all__ = [
    'calculate_psnr',
    'calculate_psnr_pt',
    'calculate_ssim',
    'calculate_ssim_3d',
    'calculate_ssim_3d_pt',
    'calculate_ssim_pt',
]
