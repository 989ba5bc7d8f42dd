"""Image quality metrics: PSNR, standard SSIM and the EFNet reference's 3-D SSIM (numpy, registered)."""

from basicsr.metrics.psnr_ssim import calculate_psnr, calculate_ssim, calculate_ssim_3d

__all__ = ['calculate_psnr', 'calculate_ssim', 'calculate_ssim_3d']
