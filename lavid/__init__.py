"""lavid: latent-action world models from in-the-wild video."""

__version__ = "0.1.0"
