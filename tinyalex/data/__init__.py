"""Data: readers (ILSVRC, Tiny ImageNet, Imagenette), subsets, prepare, augmentation, loader."""
