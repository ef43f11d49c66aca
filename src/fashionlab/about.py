"""Facts about the package that every layer may need: its version and Fashion-MNIST's class names.

A leaf: modules import these from here, never from the package's `__init__`, which sits above everything
(it loads the Python API).
"""

__version__ = "0.1.0"

CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
