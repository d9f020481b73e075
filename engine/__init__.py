"""Infrastructure shared by every facegan family: seeding, devices, checkpoints, configs.

This package imports torch, the standard library and logging tools only, never another
facegan package, so that data_prep, gan, attributes and transfer can all build on it.
"""
