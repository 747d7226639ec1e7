"""pix2pix: conditional GAN image-to-image translation (Isola et al. 2017) in PyTorch.

Import what you need from the submodules; this package imports nothing heavy at load time:

    from pix2pix.config import Config
    from pix2pix.data import PairedDataset
    from pix2pix.train import Trainer
    from pix2pix.loading import load_runner
    from pix2pix.predict import translate
"""

__version__ = "0.1.0"
