"""The layers, one file per idea, in the order of the paper's sections."""

from .activations import ReLU, Tanh
from .base import Layer
from .conv import Conv2D
from .dropout import Dropout
from .linear import Flatten, Linear
from .loss import SoftmaxCrossEntropy, log_softmax, softmax
from .lrn import LocalResponseNorm
from .pool import MaxPool2D

__all__ = ["Layer", "Conv2D", "ReLU", "Tanh", "LocalResponseNorm", "MaxPool2D", "Dropout",
           "Linear", "Flatten", "SoftmaxCrossEntropy", "softmax", "log_softmax"]
