"""SGD exactly as §5, and the divide-by-10-on-plateau schedule."""

import numpy as np
import pytest

from tinyalex.optim import SGD, PlateauSchedule


def test_sgd_follows_the_papers_update_rule():
    """v <- 0.9 v - 0.0005 lr w - lr g;  w <- w + v, checked by hand for three steps."""
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((3, 4))
    grads = [rng.standard_normal((3, 4)) for _ in range(3)]
    params = {"layer.W": w0.copy()}
    opt = SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4)
    w, v = w0.copy(), np.zeros_like(w0)
    for g in grads:
        opt.step({"layer.W": g})
        v = 0.9 * v - 0.0005 * 0.01 * w - 0.01 * g
        w = w + v
        np.testing.assert_allclose(params["layer.W"], w, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(opt.velocity["layer.W"], v, rtol=1e-13, atol=1e-15)


def test_sgd_updates_in_place_and_keeps_dtype():
    w = np.ones(5, np.float32)
    opt = SGD({"w": w})
    opt.step({"w": np.ones(5, np.float32)})
    assert w.dtype == np.float32 and np.all(w < 1)


def test_weight_decay_shrinks_weights_without_gradient():
    """With zero gradient the only force is decay: w shrinks towards 0."""
    w = np.full(3, 2.0)
    opt = SGD({"w": w}, lr=0.1, weight_decay=0.1)
    for _ in range(10):
        opt.step({"w": np.zeros(3)})
    assert np.all(w < 2.0) and np.all(w > 0)


def test_sgd_state_round_trip():
    params = {"a": np.arange(3.0)}
    opt = SGD(params, lr=0.05)
    opt.step({"a": np.ones(3)})
    state = opt.state_dict()
    other = SGD({"a": np.arange(3.0)}, lr=1.0)
    other.load_state_dict(state)
    assert other.lr == 0.05
    np.testing.assert_array_equal(other.velocity["a"], opt.velocity["a"])


def test_schedule_divides_by_ten_on_plateau_at_most_three_times():
    """§5: lr / 10 whenever validation error stops improving, three times in all."""
    s = PlateauSchedule(lr=0.01, patience=1)
    assert s.step(0.9) == 0.01           # first epoch: improvement from inf
    assert s.step(0.8) == 0.01           # improving
    assert s.step(0.8) == pytest.approx(0.001)   # stalled -> /10
    assert s.step(0.7) == pytest.approx(0.001)
    assert s.step(0.75) == pytest.approx(1e-4)
    assert s.step(0.75) == pytest.approx(1e-5)
    assert s.exhausted
    assert s.step(0.9) == pytest.approx(1e-5)    # no fourth reduction


def test_schedule_patience_and_state_round_trip():
    s = PlateauSchedule(lr=0.1, patience=2)
    s.step(0.5)
    s.step(0.6)
    assert s.lr == 0.1                   # one bad epoch is within patience
    state = s.state_dict()
    other = PlateauSchedule()
    other.load_state_dict(state)
    assert other.state_dict() == state
    assert s.step(0.6) == other.step(0.6) == pytest.approx(0.01)


def test_budget_schedule_warms_up_then_decays_to_zero():
    """Cosine and linear: lr*(t+1)/W during the warm-up, the peak right after it, half the
    peak half-way through the decay, and (near) zero at the last planned step."""
    from tinyalex.optim import BudgetSchedule

    for shape in ("cosine", "linear"):
        s = BudgetSchedule(0.02, total_steps=104, warmup_steps=4, shape=shape)
        assert [s.lr_at(t) for t in range(4)] == pytest.approx([0.005, 0.01, 0.015, 0.02])
        assert s.lr_at(4) == pytest.approx(0.02)
        assert s.lr_at(54) == pytest.approx(0.01)
        assert s.lr_at(103) < 0.02 * 0.011 and s.lr_at(104) == pytest.approx(0.0)
        lrs = [s.lr_at(t) for t in range(4, 105)]
        assert all(a >= b for a, b in zip(lrs, lrs[1:])), "the decay never rises"
        assert s.step(0.5) == 0.02, "validation does not move a planned decay"
    cos = BudgetSchedule(1.0, 100, 0, "cosine")
    lin = BudgetSchedule(1.0, 100, 0, "linear")
    assert cos.lr_at(25) > lin.lr_at(25) and cos.lr_at(75) < lin.lr_at(75)
    with pytest.raises(ValueError):
        BudgetSchedule(0.01, 100, 0, "step")
    restored = BudgetSchedule(1.0, 1, 0, "linear")
    restored.load_state_dict(cos.state_dict())
    assert [restored.lr_at(t) for t in range(100)] == [cos.lr_at(t) for t in range(100)]
