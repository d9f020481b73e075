"""Face super-resolution: the thesis's residual SR-GAN (after Ledig et al. 2017).

config (SRRunConfig) -> train (HR faces, degraded on the fly by data_prep.degrade, SRStep, the
engine's Trainer) -> inference (load a checkpoint, super-resolve), apply (whole folders and
datasets, keeping their labels) and evaluate (PSNR, SSIM, LPIPS, identity, beside bicubic).
"""
