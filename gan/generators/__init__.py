"""Unconditional face generators: DCGAN (with the non-saturating, hinge or WGAN-GP loss) and BEGAN.

config (GANRunConfig) -> data (aligned faces) -> step (DCGANStep, BEGANStep) -> train (the
engine's Trainer) -> inference (load a checkpoint, sample) and evaluate (FD-face, FID, KID).
"""
