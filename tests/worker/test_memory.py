"""A session's memory footprint: the LoRA it counts is the adapter peft builds, and the parts
that grow with the session's parameters do grow."""

from sdpo.params import BestOfKParams, SDPOParams
from worker.adapter import SessionAdapter
from worker.memory import MemoryBudget, lora_bytes, params_footprint


def test_the_counted_lora_is_the_adapter_peft_builds(tiny):
    for params in (SDPOParams(), SDPOParams(lora_rank=4, lora_target_modules=["q_proj", "v_proj"])):
        counted = lora_bytes(tiny.model, params)
        adapter = SessionAdapter(tiny.model, params, seed=0)
        try:
            built = sum(p.numel() * p.element_size() for p in adapter.student_params())
            assert lora_bytes(tiny.model, params) == counted  # the base now holds LoRA layers
        finally:
            adapter.close()
        assert counted == built


def test_an_sdpo_session_counts_its_adapter_teacher_optimizer_and_largest_step(tiny):
    model = tiny.model
    sdpo = params_footprint(model, SDPOParams(), 100, 1024)
    assert sdpo.teacher == sdpo.adapter > 0 and sdpo.optimizer == 3 * sdpo.adapter
    assert params_footprint(model, SDPOParams(teacher_model_kind="base"), 100, 1024).teacher == 0
    sampling_only = params_footprint(model, BestOfKParams(), 100, 1024)
    assert sampling_only.adapter == 0 and 0 < sampling_only.total < sdpo.total
    # the update's activations grow with the tokens per pass, up to the whole batch
    assert params_footprint(model, SDPOParams(), 100, 256).total < sdpo.total
    whole = params_footprint(model, SDPOParams(), 100, 10**9).activations
    assert whole == params_footprint(model, SDPOParams(), 100, 10**8).activations


def test_the_budget_admits_typical_sessions_while_they_fit(tiny):
    typical = params_footprint(tiny.model, SDPOParams(), 256, 1024)
    budget = MemoryBudget(int(2.5 * typical.total), typical)
    first, second = budget.reserve(typical), budget.reserve(typical)
    assert not budget.fits() and budget.sessions_that_fit() == 0
    second.release()
    second.release()  # twice is harmless
    assert budget.fits() and budget.sessions_that_fit() == 1
    first.resize(params_footprint(tiny.model, BestOfKParams(), 16, 1024))  # a small session
    assert budget.sessions_that_fit() == 2
