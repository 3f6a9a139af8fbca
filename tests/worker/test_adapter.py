import torch

from sdpo.params import SDPOParams
from worker.adapter import SessionAdapter, host_of
from worker.scoring import attempt_logits
from worker.update import DistillBatch, distill, make_optimizer, teacher_hidden


def _base_state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_fresh_adapter_is_identity_and_close_restores_the_base(tiny):
    ids = [tiny.chat_ids("add ? to each element")]
    attempt = [[5, 6, 7]]
    before_state = _base_state(tiny.model)
    with torch.no_grad():
        before, _ = attempt_logits(tiny.model, ids, attempt)
    adapter = SessionAdapter(tiny.model, SDPOParams(), seed=0)
    with torch.no_grad():
        fresh, _ = attempt_logits(adapter.model, ids, attempt)
    torch.testing.assert_close(fresh, before)  # lora_B starts at zero
    for p in adapter.student_params():
        p.data.add_(0.1)
    with torch.no_grad():
        changed, _ = attempt_logits(adapter.model, ids, attempt)
    assert not torch.allclose(changed, before)
    base = adapter.close()
    assert base is tiny.model
    after = base.state_dict()
    assert after.keys() == before_state.keys()
    assert all(torch.equal(after[k], v) for k, v in before_state.items())


def test_only_student_lora_weights_train(tiny):
    adapter = SessionAdapter(tiny.model, SDPOParams(), seed=0)
    trainable = {n for n, p in adapter.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n and f".{adapter.student}." in n for n in trainable)
    adapter.close()


def test_ema_teacher_follows_the_student_at_the_update_rate(tiny):
    adapter = SessionAdapter(tiny.model, SDPOParams(teacher_model_kind="ema"), seed=0)
    student = adapter.student_params()[0]
    teacher = adapter._teacher_params()[0]
    start = teacher.detach().clone()
    with torch.no_grad():
        student.add_(1.0)
    adapter.update_teacher(0.25)
    torch.testing.assert_close(teacher.detach(), start + 0.25)
    adapter.close()


def test_teacher_kinds_compute_with_their_weights(tiny):
    ids, attempt = [tiny.chat_ids("sort")], [[5, 6]]
    with torch.no_grad():
        base_logits, _ = attempt_logits(tiny.model, ids, attempt)
    for kind in ("base", "live", "ema"):
        adapter = SessionAdapter(tiny.model, SDPOParams(teacher_model_kind=kind), seed=0)
        with torch.no_grad():
            for p in adapter.student_params():
                p.add_(0.05)
            with adapter.teacher():
                teacher, _ = attempt_logits(adapter.model, ids, attempt)
            student, _ = attempt_logits(adapter.model, ids, attempt)
        same_as_base = torch.allclose(teacher, base_logits)
        same_as_student = torch.allclose(teacher, student)
        assert (same_as_base, same_as_student) == {
            "base": (True, False),
            "live": (False, True),
            "ema": (True, False),  # the EMA has not moved yet: still the fresh adapter
        }[kind]
        adapter.close()


def test_adapter_state_round_trips(tiny):
    adapter = SessionAdapter(tiny.model, SDPOParams(), seed=0)
    with torch.no_grad():
        for p in adapter.student_params():
            p.add_(0.3)
    state = adapter.state_dict()
    adapter.close()
    other = SessionAdapter(tiny.model, SDPOParams(), seed=1)
    other.load_state_dict(state)
    assert all(torch.equal(other.state_dict()[k], v) for k, v in state.items())
    other.close()


def _logits(adapter: SessionAdapter, tiny) -> torch.Tensor:
    with torch.no_grad():
        return attempt_logits(adapter.model, [tiny.chat_ids("sort")], [[5, 6, 7]])[0]


def test_sessions_share_the_base_without_touching_each_others_adapters(tiny):
    """Two sessions' adapters live on one base at once: each starts as it would alone (from its
    seed), computes with its own weights, and an update of one leaves the other's weights and
    outputs exactly as they were. Closing both leaves the bare base."""
    before_state = _base_state(tiny.model)
    alone = SessionAdapter(tiny.model, SDPOParams(), seed=1)
    alone_state, alone_logits = alone.state_dict(), _logits(alone, tiny)
    alone.close()

    params = SDPOParams(learning_rate=1e-2)
    first = SessionAdapter(tiny.model, params, seed=0)
    second = SessionAdapter(tiny.model, SDPOParams(), seed=1)
    assert first.student != second.student and host_of(tiny.model).adapters == 4
    second_state = second.state_dict()
    for name, value in alone_state.items():  # the same init, whoever else is on the base
        assert torch.equal(second_state[name], value), name
    torch.testing.assert_close(_logits(second, tiny), alone_logits, rtol=0, atol=0)

    prompt = tiny.chat_ids("sort")
    batch = DistillBatch([prompt] * 2, [prompt + [9], prompt + [10]], [[5, 6], [7]],
                         [[-1.0, -1.0], [-1.0]])  # fmt: skip
    with torch.no_grad():  # a student unlike its teacher, so that the step moves it
        for p in first.student_params():
            p.add_(0.05 * torch.randn_like(p))
    first_before = first.state_dict()
    distill(first, make_optimizer(first, params), batch, teacher_hidden(first, batch), params)
    assert any(not torch.equal(first.state_dict()[k], v) for k, v in first_before.items())
    assert all(torch.equal(second.state_dict()[k], v) for k, v in second_state.items())
    torch.testing.assert_close(_logits(second, tiny), alone_logits, rtol=0, atol=0)
    assert not torch.allclose(_logits(first, tiny), alone_logits)

    first.close()
    torch.testing.assert_close(_logits(second, tiny), alone_logits, rtol=0, atol=0)
    assert second.close() is tiny.model and host_of(tiny.model).adapters == 0
    after = tiny.model.state_dict()
    assert after.keys() == before_state.keys()
    assert all(torch.equal(after[k], v) for k, v in before_state.items())


def test_a_checkpoint_loads_into_an_adapter_of_another_name(tiny):
    first = SessionAdapter(tiny.model, SDPOParams(teacher_model_kind="ema"), seed=0)
    with torch.no_grad():
        for p in first.student_params():
            p.add_(0.3)
    state = first.state_dict()
    assert all(".student." in k or ".teacher." in k for k in state)
    other = SessionAdapter(tiny.model, SDPOParams(teacher_model_kind="ema"), seed=1)
    assert other.student != first.student
    other.load_state_dict(state)
    assert all(torch.equal(other.state_dict()[k], v) for k, v in state.items())
    torch.testing.assert_close(_logits(other, tiny), _logits(first, tiny), rtol=0, atol=0)
    first.close()
    other.close()
