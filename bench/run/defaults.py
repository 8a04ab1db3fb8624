"""The grid defaults of ``bench run`` (no imports: the CLI reads them for its help text without
loading torch)."""

DEFAULTS = {
    "predictors": ("euler_maruyama", "reverse_diffusion", "ancestral_sampling"),
    "correctors": ("none", "langevin"),
    "steps": (100, 1000),
    "samples": 1000,
    "batch_size": 1000,
    "snrs": (0.16,),
    "seeds": "0",
}
"""Grid defaults where neither the user nor the model (``ScoreModel.default_grid``) sets one."""
