"""default_mamba_interval: checkpoints no denser than the attention K/V they
cover, rounded up to 512 and the hit alignment; the manager's auto default."""

from __future__ import annotations

from helpers import CROSS, FULL, MAMBA, SLIDE8, tiny_plan
from jenga.memory.checkpoint_interval import default_mamba_interval
from jenga.memory.manager import MemoryManager
from jenga.memory.plan import Group, MemoryPlan
from jenga.memory.planner import build_plan
from jenga.memory.shapes.presets import get_preset
from jenga.memory.spec import LayerSpec, full, mamba

BIG = LayerSpec("mamba", "float32", conv_state=(2,), ssm_state=(2000,))    # 8008 bytes per state
MAMBA_D = LayerSpec("mamba", "float32", conv_state=(2,), ssm_state=(6,), model="d")   # a draft's 32 B
WIDE = LayerSpec("mamba", "float32", conv_state=(2,), ssm_state=(4100,))   # 16408 bytes per state


def test_jamba_checkpoints_every_1024_tokens():
    plan = build_plan(get_preset("jamba-1.5-mini"), 2**30)
    state, attn = plan.groups
    assert (state.kind, state.small_page_bytes) == ("mamba", 16_515_072)         # 28 layers
    assert (attn.kind, attn.small_page_bytes // attn.page_tokens) == ("full", 16_384)   # 4 layers
    assert default_mamba_interval(plan) == 1024   # ceil(16515072 / 16384) = 1008, up to 2 x 512


def test_tiny_hybrids_round_up_to_512_and_the_alignment():
    assert default_mamba_interval(tiny_plan([(FULL, 1, 4), (MAMBA, 1, 1)], 4)) == 512   # 4 tokens: the minimum
    assert default_mamba_interval(tiny_plan([(FULL, 1, 4), (BIG, 1, 1)], 4)) == 1024    # 8008 / 8 = 1001
    assert default_mamba_interval(tiny_plan([(FULL, 1, 4), (WIDE, 1, 1)], 4)) == 2560   # 2051
    half = LayerSpec("mamba", "float32", conv_state=(2,), ssm_state=(1023,))        # 4100 bytes
    assert default_mamba_interval(tiny_plan([(FULL, 1, 4), (half, 1, 1)], 4)) == 1024   # 512.5 rounds up
    # every sequence-token group counts (16 bytes a token: 1025.5 tokens),
    # encoder-token groups do not
    assert default_mamba_interval(tiny_plan([(FULL, 1, 4), (SLIDE8, 1, 4), (WIDE, 1, 1)], 4)) == 1536
    assert default_mamba_interval(tiny_plan([(FULL, 1, 4), (CROSS, 1, 4), (WIDE, 1, 1)], 4)) == 2560
    # two layers per group: twice the state and twice the K/V per token
    assert default_mamba_interval(tiny_plan([(FULL, 2, 4), (BIG, 2, 1)], 4)) == 1024
    # 12-token attention pages: hits end on multiples of 12, so 1536 = lcm(512, 12)
    assert default_mamba_interval(tiny_plan([(FULL, 1, 12), (MAMBA, 1, 1)], 4)) == 1536


def test_pure_recurrent_plan_keeps_512_and_attention_only_is_unused_512():
    assert default_mamba_interval(tiny_plan([(BIG, 3, 1)], 4)) == 512
    assert default_mamba_interval(build_plan([mamba((3, 64), (64, 16))] * 4, 2**24)) == 512
    assert default_mamba_interval(tiny_plan([(FULL, 1, 4)], 4)) == 512


def test_each_model_tag_weighs_its_own_attention_and_the_plan_takes_the_largest():
    main_tiny = [(FULL, 1, 4), (MAMBA, 1, 1)]                    # main alone: 512
    draft = [(LayerSpec("full", "float32", 1, 1, model="d"), 1, 4),
             (LayerSpec("mamba", "float32", conv_state=(2,), ssm_state=(2000,), model="d"), 1, 1)]
    # pooled over both models it would be (32 + 8008) / 16 = 503 tokens -> 512
    assert default_mamba_interval(tiny_plan(main_tiny + draft, 4)) == 1024
    assert default_mamba_interval(tiny_plan([(FULL, 1, 4), (BIG, 1, 1)] + draft[:1] + [(MAMBA_D, 1, 1)], 4)) == 1024
    pure_draft = [(LayerSpec("mamba", "float32", conv_state=(2,), ssm_state=(2000,), model="d"), 1, 1)]
    assert default_mamba_interval(tiny_plan([(FULL, 1, 4), (BIG, 1, 1)] + pure_draft, 4)) == 1024


def test_a_planned_small_hybrid():
    specs = [full(1, 8)] + [mamba((4, 64), (64, 16), state_dtype="float32")] * 16   # 32 B of K/V a token
    plan = build_plan(specs, 2**26)
    assert plan.groups[1].small_page_bytes == 16 * (4 * 64 * 2 + 64 * 16 * 4)       # 73728 B a state
    assert default_mamba_interval(plan) == 2560                                     # 2304 -> 5 x 512


def test_padding_counts_as_the_pool_charges_it():
    large = 16 * 16408
    padded = Group(0, FULL, (0,), 4, 64, large // 64, padding_bytes=32)   # 16 B a token, half of it padding
    state = Group(1, WIDE, (1,), 1, 16408, 16)
    plan = MemoryPlan((padded, state), large, 2, base_page_tokens=4)
    assert default_mamba_interval(plan) == 1536   # 1025.5 tokens; 2560 without the padding


def test_manager_auto_interval_places_checkpoints_at_it():
    plan = tiny_plan([(FULL, 1, 4), (BIG, 1, 1)], 8)
    auto, pinned = MemoryManager(plan), MemoryManager(plan, mamba_interval=512)
    assert (auto.mamba_interval, pinned.mamba_interval) == (1024, 512)
    assert (auto.hit_granularity(), pinned.hit_granularity()) == (1024, 512)
    saves = []
    for m in (auto, pinned):
        m.add("a", list(range(2102)), 2102)
        saves.append([pos for _, pos, _ in m.allocate("a", 0, 2102).saves])
    assert saves == [[1024, 2048, 2100], [512, 1024, 1536, 2048, 2100]]   # 2100: the prompt end, aligned
