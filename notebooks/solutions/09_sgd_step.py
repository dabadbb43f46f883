"""Chapter 09, solution: one step of the paper's SGD rule (§5)."""


def sgd_step(w, v, g, lr, momentum=0.9, weight_decay=5e-4):
    """v <- momentum v - weight_decay lr w - lr g;  w <- w + v.  Returns (w, v)."""
    v = momentum * v - weight_decay * lr * w - lr * g
    return w + v, v
