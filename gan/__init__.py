"""Face generation and face super-resolution.

- `gan.generators`: DCGAN and BEGAN, trained on aligned faces, sampled from checkpoints;
- `gan.sr`: the residual super-resolution GAN, trained, applied to folders and datasets, evaluated;
- `gan.losses`: the adversarial objectives both use; `gan.metrics`: FD-face, FID/KID, PSNR/SSIM, LPIPS.
"""
from engine.deprecation import alias_modules

# Module paths of facegan 0.1, kept for one release.
alias_modules({
    "gan.cli": ("gan.generators.config", "gan.generators.train", "gan.generators.inference"),
    "gan.config": ("gan.generators.config",),
    "gan.data": ("gan.generators.config", "gan.generators.data", "data_prep.transforms"),
    "gan.steps": ("gan.generators.step",),
    "gan.models": ("gan.generators.models", "gan.sr.models"),
    "gan.models.dcgan": ("gan.generators.models.dcgan",),
    "gan.models.began": ("gan.generators.models.began",),
    "gan.models.latent": ("gan.generators.models.latent",),
    "gan.models.srgan": ("gan.sr.models",),
    "gan.degrade": ("data_prep.degrade", "data_prep.transforms"),
    "gan.sr_config": ("gan.sr.config",),
    "gan.sr_step": ("gan.sr.step", "gan.sr.inference"),
    "gan.sr_apply": ("gan.sr.apply", "gan.sr.inference"),
    "gan.sr_eval": ("gan.sr.evaluate",),
    "gan.sr_cli": ("gan.sr.config", "gan.sr.train"),
})
