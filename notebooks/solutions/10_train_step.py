"""Chapter 10, solution: one training step, forward, loss and backward."""


def train_step(net, loss_fn, x, y):
    """Returns (loss, logits); leaves dL/dparams in net.grads."""
    logits = net.forward(x, train=True)
    loss = loss_fn.forward(logits, y)
    net.backward(loss_fn.backward())
    return loss, logits
