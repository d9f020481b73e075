"""Multi-dataset face-attribute recognition: one shared trunk, a head per dataset, SA-softmax.

config (AttributeRunConfig) -> data (each dataset aligned, cached and split) -> model (trunk and
heads) -> step (AttributeStep: losses, SA tags, augmentation) -> train (the engine's Trainer;
ensembles) -> inference (load a checkpoint, predict), evaluate (metrics, report), and the
toolbox: verification, explain (Grad-CAM), prune (network slimming), distill.
"""
from engine.deprecation import alias_modules

# Module paths of facegan 0.1, kept for one release.
alias_modules({
    "attributes.evaluation": ("attributes.evaluate",),
    "attributes.prune_cli": ("attributes.prune",),
    "attributes.distill_cli": ("attributes.distill",),
    "attributes.verify_cli": ("attributes.verification",),
})
