"""ftlab.costs: every formula against a hand computation, the decision helpers, and clear errors."""

import math
from dataclasses import replace

import pytest

from ftlab import costs
from ftlab.costs import GPU, GPUS, Prices, SelfHosted, Workload

H100 = GPUS["H100 SXM"]
TOY = GPU("toy", memory_gib=10, tensor_tflops=100, bandwidth_gbs=1000, usd_per_hour=2.0)


def test_training_flops():
    assert costs.training_flops(1e9, 1e6) == 6e15
    assert costs.training_flops(1e9, 1e6, epochs=3) == 18e15
    assert costs.training_flops(1e9, 1e6, method="lora") == 4e15 == costs.training_flops(1e9, 1e6, method="qlora")


def test_checkpointing_recomputes_the_forward_pass():
    # forward 2ND + backward 4ND (2ND for LoRA, which needs no weight gradients) + the forward again, 2ND
    assert costs.training_flops(1e9, 1e6, recompute=True) == 8e15
    assert costs.training_flops(1e9, 1e6, method="lora", recompute=True) == 6e15
    hours = costs.training_gpu_hours(1e9, 1e9, gpu=H100, method="qlora", recompute=True, utilisation=0.5)
    assert hours == pytest.approx(6e18 / (989e12 * 0.5) / 3600)
    with pytest.raises(TypeError, match="recompute"):
        costs.training_flops(1e9, 1e6, recompute="yes")


def test_monthly_costs_train_with_the_model_recompute_flag():
    work = Workload(requests_per_day=10, train_tokens=1e6, epochs=1)
    plain = costs.monthly_costs(work, model=SelfHosted(n_params=1e9, gpu=TOY, method="lora"))
    ckpt = costs.monthly_costs(work, model=SelfHosted(n_params=1e9, gpu=TOY, method="lora", recompute=True))
    assert ckpt["fine-tuning"]["training_gpu_hours"] == pytest.approx(1.5 * plain["fine-tuning"]["training_gpu_hours"])


def test_t4_peak_is_fp16_not_bf16():
    assert GPUS["T4"].precision == "fp16"  # Turing has fp16 tensor cores and no bf16 ones
    assert {g.precision for name, g in GPUS.items() if name != "T4"} == {"bf16"}


def test_module_docstring_example_runs():
    example = [line.strip() for line in costs.__doc__.splitlines()[2:6]]
    assert example[0].startswith("gpu = GPUS")
    scope = vars(costs).copy()
    exec("\n".join(example), scope)  # the first thing a reader copies must not raise
    assert scope["table"]["fine-tuning"]["people_usd"] == 40 * Prices().engineer_hour


def test_training_gpu_hours_by_hand():
    hours = costs.training_gpu_hours(1e9, 1e9, gpu=H100, utilisation=0.35)
    assert hours == pytest.approx(6e18 / (989e12 * 0.35) / 3600)
    assert costs.training_gpu_hours(1e9, 1e9, gpu=H100, method="lora") == pytest.approx(hours * 4 / 6)


def test_latency_by_hand():
    lat = costs.latency(1e9, prompt_tokens=500, output_tokens=100, gpu=TOY, bytes_per_param=2,
                        compute_utilisation=0.5, bandwidth_utilisation=0.8)
    assert lat["prefill_s"] == pytest.approx(2 * 1e9 * 500 / (100e12 * 0.5))  # 0.02 s
    assert lat["per_token_s"] == pytest.approx(2e9 / (1000e9 * 0.8))  # 2.5 ms per token
    assert lat["decode_s"] == pytest.approx(100 * lat["per_token_s"])
    assert lat["total_s"] == pytest.approx(lat["prefill_s"] + lat["decode_s"])
    assert costs.latency(1e9, 0, 0, gpu=TOY)["total_s"] == 0
    # 4-bit weights are read four times faster than bf16 during decoding
    q = costs.latency(1e9, 0, 100, gpu=TOY, bytes_per_param=0.5)
    assert q["decode_s"] == pytest.approx(costs.latency(1e9, 0, 100, gpu=TOY)["decode_s"] / 4)


def test_short_prefill_waits_on_memory():
    # the review's L4 case: 200 prompt tokens of a 1.1e9-parameter bf16 model
    l4 = GPUS["L4"]
    lat = costs.latency(1.1e9, prompt_tokens=200, output_tokens=0, gpu=l4)
    compute = 2 * 1.1e9 * 200 / (121e12 * 0.5)  # 7.3 ms of arithmetic
    read = 1.1e9 * 2 / (300e9 * 0.7)  # 10.5 ms to read the weights once
    assert compute < read and lat["prefill_s"] == pytest.approx(read)
    long = costs.latency(1.1e9, prompt_tokens=2000, output_tokens=0, gpu=l4)
    assert long["prefill_s"] == pytest.approx(2 * 1.1e9 * 2000 / (121e12 * 0.5))  # 73 ms: compute-bound now


@pytest.mark.parametrize("call,name", [
    (lambda: costs.training_flops(-1, 10), "n_params"),
    (lambda: costs.training_flops(1, 0), "tokens"),
    (lambda: costs.training_flops(1, 1, method="prefix"), "method"),
    (lambda: costs.training_gpu_hours(1, 1, gpu=TOY, utilisation=1.5), "utilisation"),
    (lambda: costs.training_gpu_hours(1, 1, gpu=TOY, utilisation=0), "utilisation"),
    (lambda: costs.latency(1e9, -5, 1, gpu=TOY), "prompt_tokens"),
    (lambda: costs.latency(1e9, 5, "many", gpu=TOY), "output_tokens"),
    (lambda: costs.storage_gb(1e9, 0), "bytes_per_param"),
    (lambda: Workload(requests_per_day=-1), "requests_per_day"),
    (lambda: Workload(requests_per_day=10, epochs=0), "epochs"),
    (lambda: Workload(requests_per_day=10, labelling_hours=-3), "labelling_hours"),
    (lambda: costs.break_even_requests_per_day(Workload(10), approach="magic"), "approach"),
])
def test_errors_name_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_monthly_costs_by_hand():
    work = Workload(requests_per_day=1000, input_tokens=200, output_tokens=100, instructions=300, few_shot_tokens=500,
                    retrieved_tokens=1000, corpus_tokens=1e6, train_tokens=1e6, epochs=2, days=30)
    prices = Prices(api_input_per_mtok=1.0, api_output_per_mtok=2.0, embed_per_mtok=0.1, storage_gb_month=0.02)
    model = SelfHosted(n_params=1e9, gpu=TOY, method="lora", concurrency=10, min_gpus=0, adapter_params=1e6)
    c = costs.monthly_costs(work, prices, model)
    n = 30_000
    assert c["prompting"]["input_tokens_per_request"] == 1000
    assert c["prompting"]["monthly_usd"] == pytest.approx(n * (1000 * 1.0 + 100 * 2.0) / 1e6)  # $36
    assert c["rag"]["input_tokens_per_request"] == 1500
    index_gb = 1e6 / 256 * 384 * 4 / 1e9
    assert c["rag"]["storage_gb"] == pytest.approx(index_gb)
    assert c["rag"]["monthly_usd"] == pytest.approx(n * (1500 + 200) / 1e6 + (1e6 + n * 200) * 0.1 / 1e6
                                                    + index_gb * 0.02)
    ft = c["fine-tuning"]
    train_h = 4 * 1e9 * 1e6 * 2 / (100e12 * 0.35) / 3600
    assert ft["training_gpu_hours"] == pytest.approx(train_h) and ft["one_off_usd"] == pytest.approx(2 * train_h)
    prefill = max(2 * 1e9 * 200 / (100e12 * 0.5), 2e9 / (1000e9 * 0.7))  # 8 ms of arithmetic, 2.9 ms of reading
    decode = 100 * 2e9 / (1000e9 * 0.7)
    assert ft["latency_s"] == pytest.approx(prefill + decode)
    # ten requests share each decoding step's weight read; nobody shares a prefill
    assert ft["gpu_hours_month"] == pytest.approx(n * (prefill + decode / 10) / 3600)
    assert ft["people_usd"] == 0
    assert ft["storage_gb"] == pytest.approx(1e6 * 2 / 1e9)  # only the adapter is stored per task
    assert ft["monthly_usd"] == pytest.approx(ft["gpu_hours_month"] * 2 + ft["storage_gb"] * 0.02)


def test_people_time_is_a_one_off_cost_of_fine_tuning():
    work = Workload(requests_per_day=1000, labelling_hours=40)
    model = SelfHosted(n_params=1e9, gpu=GPUS["L4"], min_gpus=1)
    without = costs.monthly_costs(replace(work, labelling_hours=0), Prices(engineer_hour=50), model)
    c = costs.monthly_costs(work, Prices(engineer_hour=50), model)
    assert c["fine-tuning"]["people_usd"] == 2000
    assert c["fine-tuning"]["one_off_usd"] == pytest.approx(without["fine-tuning"]["one_off_usd"] + 2000)
    assert c["prompting"] == without["prompting"]
    # over a year: self-hosting wins when 12 months of API bills exceed 12 months of GPU + the one-off costs
    cheap, dear = (costs.break_even_requests_per_day(work, "prompting", Prices(engineer_hour=h), model, months=12)
                   for h in (0, 500))
    per_request = (costs.monthly_costs(replace(work, requests_per_day=30), model=model)["prompting"]["monthly_usd"]
                   / (30 * 30))  # API dollars per request
    # 40 h x $500 = $20,000 more up front must be paid back by that many dollars of API calls over 360 days
    assert (dear - cheap) * 360 * per_request == pytest.approx(20_000, rel=1e-3)


def test_always_on_gpu_floor():
    c = costs.monthly_costs(Workload(requests_per_day=1), model=SelfHosted(min_gpus=2))
    assert c["fine-tuning"]["gpu_hours_month"] == 2 * 24 * 30


def test_break_even():
    work, model = Workload(requests_per_day=1), SelfHosted(n_params=1e9, gpu=GPUS["L4"], min_gpus=1)
    rpd = costs.break_even_requests_per_day(work, "prompting", model=model)
    assert 0 < rpd < math.inf

    def gap(r):
        c = costs.monthly_costs(replace(work, requests_per_day=r), model=model)
        return c["prompting"]["monthly_usd"] - c["fine-tuning"]["monthly_usd"] - c["fine-tuning"]["one_off_usd"]

    assert gap(rpd * 0.9) < 0 < gap(rpd * 1.1)
    assert abs(gap(rpd)) < 1e-3
    # over a year, training is amortised: self-hosting pays off at fewer requests per day
    assert costs.break_even_requests_per_day(work, "prompting", model=model, months=12) < rpd
    # an API that is free never loses
    free = Prices(api_input_per_mtok=0, api_output_per_mtok=0)
    assert costs.break_even_requests_per_day(work, "prompting", prices=free, model=model) == math.inf


def test_checklist_review():
    full = {c: {i: "done" for i in items} for c, items in costs.CHECKLIST.items()}
    assert costs.review_checklist(full) == {}
    first, second = costs.CHECKLIST["security"][:2]
    partial = {"security": {first: "scrubbed with regexes", second: "  "}}
    missing = costs.review_checklist(partial)
    assert missing["security"] == costs.CHECKLIST["security"][1:]
    assert set(missing) == set(costs.CHECKLIST)
    with pytest.raises(ValueError, match="unknown concerns"):
        costs.review_checklist({"vibes": {}})
    with pytest.raises(ValueError, match="unknown items"):
        costs.review_checklist({"cost": {"free lunch": "yes"}})
    with pytest.raises(TypeError, match="answers"):
        costs.review_checklist(["cost"])
