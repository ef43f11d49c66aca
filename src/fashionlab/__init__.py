"""fashionlab: train, evaluate and compare CNN classifiers on Fashion-MNIST."""

__version__ = "0.1.0"

CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
